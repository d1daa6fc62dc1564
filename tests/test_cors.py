"""CORS in the mesh file: a route's own policy or its service's, the problems each can have,
placed, and Envoy's CORS filter with the per-route CorsPolicy it becomes."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2

from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir
from meshpilot.translator.build import build_ir
from meshpilot.translator.envoy import cors, http_filters
from tests.test_mesh_load import problems, reviews

POLICY = """\
cors:
  allow_origins: [https://shop.example, {prefix: "https://beta."}, {regex: ".*\\\\.test", ignore_case: true}]
  allow_methods: [GET, POST]
  allow_headers: [x-user, X-Trace]
  expose_headers: [x-version]
  max_age: 2m
  allow_credentials: true
"""  # noqa: E501


def routes_of(text: str) -> tuple[ir.Route, ...]:
    return build_ir(parse_mesh(text, "mesh.yaml")).services[0].routes


def test_a_routes_policy_becomes_a_per_route_cors_policy() -> None:
    (r,) = routes_of(reviews("- name: web\n" + "  " + POLICY.replace("\n", "\n  ")))
    assert r.cors == ir.Cors(
        allow_origins=(
            ir.ValueMatch("origin", "exact", "https://shop.example"),
            ir.ValueMatch("origin", "prefix", "https://beta."),
            ir.ValueMatch("origin", "regex", ".*\\.test", ignore_case=True),
        ),
        allow_methods=("GET", "POST"),
        allow_headers=("x-user", "X-Trace"),
        expose_headers=("x-version",),
        max_age_s=120,
        allow_credentials=True,
    )
    service = ir.Service("reviews", 9080, "http", routes=(r,))
    wrapped = http_filters.OUTBOUND_ROUTES(service, r)["envoy.filters.http.cors"]
    config = rc.FilterConfig()
    wrapped.Unpack(config)
    policy = cors_pb2.CorsPolicy()
    config.config.Unpack(policy)
    assert config.is_optional  # a proxyless gRPC client skips it
    assert [m.WhichOneof("match_pattern") for m in policy.allow_origin_string_match] == [
        "exact",
        "prefix",
        "safe_regex",
    ]
    assert policy.allow_origin_string_match[2].safe_regex.regex == "(?i).*\\.test"
    assert (policy.allow_methods, policy.allow_headers) == ("GET,POST", "x-user,X-Trace")
    assert (policy.expose_headers, policy.max_age) == ("x-version", "120")
    assert policy.allow_credentials.value


def test_a_policy_left_unset_stays_unset() -> None:
    policy = cors.cors_policy(ir.Cors((ir.ValueMatch("origin", "exact", "*"),)))
    assert not policy.max_age and not policy.HasField("allow_credentials")
    assert not policy.allow_methods


def test_the_services_policy_is_every_routes_that_has_none_of_its_own() -> None:
    text = reviews(
        """\
        - name: own
          match: {path_prefix: /own}
          cors: {allow_origins: [https://own.example]}
        - name: inherits
        """
    ).replace("    routes:\n", "    cors: {allow_origins: ['https://all.example']}\n    routes:\n")
    own, inherits = routes_of(text)
    assert own.cors is not None and own.cors.allow_origins[0].value == "https://own.example"
    assert inherits.cors is not None
    assert inherits.cors.allow_origins[0].value == "https://all.example"
    assert "envoy.filters.http.cors" not in http_filters.OUTBOUND_ROUTES(
        ir.Service("reviews", 9080, "http"), ir.Route("plain", ir.RouteMatch(), ())
    )


def test_the_outbound_chain_carries_the_cors_filter_as_optional() -> None:
    assert cors.FILTER.optional and cors.FILTER.chains == {"outbound"}
    order = http_filters.filter_names("outbound")
    assert order.index("envoy.filters.http.cors") < order.index("envoy.filters.http.fault")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(
            "{allow_origins: []}",
            "mesh.yaml:7:31: services.reviews.routes[0].cors.allow_origins: must not be empty",
            id="no-origin",
        ),
        pytest.param(
            "{allow_origins: [{present: true}]}",
            "mesh.yaml:7:32: services.reviews.routes[0].cors.allow_origins[0]: an origin is "
            "matched by 'exact', 'prefix' or 'regex', not 'present'",
            id="present",
        ),
        pytest.param(
            "{allow_origins: ['*'], max_age: 1500ms}",
            "mesh.yaml:7:47: services.reviews.routes[0].cors.max_age: must be a whole number "
            "of seconds, at least 1s",
            id="max-age-fraction",
        ),
        pytest.param(
            "{allow_origins: ['*'], allow_methods: [FETCH]}",
            "mesh.yaml:7:54: services.reviews.routes[0].cors.allow_methods[0]: unknown value "
            "'FETCH'; did you mean 'PATCH'?",
            id="unknown-method",
        ),
    ],
)
def test_cors_problems(policy: str, expected: str) -> None:
    assert problems(reviews(f"- cors: {policy}\n")) == [expected]
