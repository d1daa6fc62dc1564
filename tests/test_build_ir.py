"""MeshSpec -> MeshIR: defaults applied, durations in ms, everything sorted."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

from meshpilot.mesh.load import load_mesh, parse_mesh
from meshpilot.model import ir
from meshpilot.translator.build import build_ir

FIXTURE = Path(__file__).parent / "fixtures" / "valid-mesh.yaml"

MESH = dedent(
    """\
    mesh: shop
    defaults:
      timeout: 15s
      retries: {attempts: 2, on: [connect-failure, reset], per_try_timeout: 5s}
    services:
      reviews:
        port: 9080
        subsets:
          v2: {version: v2, track: canary}
          v1: {version: v1}
        endpoints:
          - {address: 10.0.0.9, port: 9102, labels: {version: v2}}
          - {address: 10.0.0.1, port: 9101, labels: {zone: a, version: v1}}
        routes:
          - name: testers
            match: {path_prefix: /, headers: {X-User: tester, accept: json}, methods: [POST, GET]}
            to: [{subset: v2}]
          - name: canary
            to:
              - {subset: v1, weight: 90}
              - {subset: v2, weight: 10}
            timeout: 2s
            retries: {attempts: 3, on: [5xx], per_try_timeout: 500ms}
          - name: no-retries
            match: {path: /health}
            retries: {attempts: 0}
      cart:
        port: 8080
        protocol: grpc
    """
)

DEFAULT_RETRIES = ir.RetryPolicy(
    attempts=2, on=("connect-failure", "reset"), per_try_timeout_ms=5000
)
WHOLE = (ir.Destination(subset=None, weight=100),)
ISTIO_ON = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)
ISTIO_RETRIES = ir.RetryPolicy(2, ISTIO_ON, None, (503,))

EXPECTED = ir.MeshIR(
    name="shop",
    services=(
        ir.Service(
            name="cart",
            port=8080,
            protocol="grpc",
            routes=(
                ir.Route(
                    name="default",
                    match=ir.RouteMatch(),
                    to=WHOLE,
                    timeout_ms=15000,
                    retries=DEFAULT_RETRIES,
                ),
            ),
        ),
        ir.Service(
            name="reviews",
            port=9080,
            protocol="http",
            subsets=(
                ir.Subset("v1", (("version", "v1"),)),
                ir.Subset("v2", (("track", "canary"), ("version", "v2"))),
            ),
            endpoints=(
                ir.StaticEndpoint("10.0.0.9", 9102, (("version", "v2"),)),
                ir.StaticEndpoint("10.0.0.1", 9101, (("version", "v1"), ("zone", "a"))),
            ),
            routes=(
                ir.Route(
                    name="testers",
                    match=ir.RouteMatch(
                        path_prefix="/",
                        headers=(
                            ir.ValueMatch("accept", "exact", "json"),
                            ir.ValueMatch("x-user", "exact", "tester"),
                        ),
                        methods=("POST", "GET"),
                    ),
                    to=(ir.Destination("v2", 100),),
                    timeout_ms=15000,
                    retries=DEFAULT_RETRIES,
                ),
                ir.Route(
                    name="canary",
                    match=ir.RouteMatch(),
                    to=(ir.Destination("v1", 90), ir.Destination("v2", 10)),
                    timeout_ms=2000,
                    retries=ir.RetryPolicy(attempts=3, on=("5xx",), per_try_timeout_ms=500),
                ),
                ir.Route(
                    name="no-retries",
                    match=ir.RouteMatch(path="/health"),
                    to=WHOLE,
                    timeout_ms=15000,
                    retries=ir.RetryPolicy(0, ISTIO_ON, None, (503,)),
                ),
            ),
        ),
    ),
)


def test_ir_of_a_small_mesh() -> None:
    assert build_ir(parse_mesh(MESH, "mesh.yaml"), secure=False) == EXPECTED


def test_without_defaults_routes_have_no_timeout_and_istios_retries() -> None:
    built = build_ir(parse_mesh("mesh: m\nservices:\n  a: {port: 1}\n", "mesh.yaml"), secure=False)
    assert built == ir.MeshIR(
        name="m",
        services=(
            ir.Service(
                name="a",
                port=1,
                protocol="http",
                routes=(
                    ir.Route(
                        name="default", match=ir.RouteMatch(), to=WHOLE, retries=ISTIO_RETRIES
                    ),
                ),
            ),
        ),
    )


def test_route_overrides_win_over_defaults() -> None:
    text = dedent(
        """\
        mesh: m
        defaults: {timeout: 1m, retries: {attempts: 5}}
        services:
          a:
            port: 1
            routes:
              - {name: own, timeout: 0s, retries: {attempts: 1, on: [gateway-error]}}
              - {name: inherits}
        """
    )
    own, inherits = build_ir(parse_mesh(text, "mesh.yaml")).services[0].routes
    assert (own.timeout_ms, own.retries) == (0, ir.RetryPolicy(1, ("gateway-error",), None))
    assert (inherits.timeout_ms, inherits.retries) == (
        60_000,
        ir.RetryPolicy(5, ISTIO_ON, None, (503,)),
    )


def test_retries_listing_conditions_or_codes_retry_exactly_those() -> None:
    """`on` given: no 503 unless listed; codes given: those codes with Istio's conditions."""
    text = dedent(
        """\
        mesh: m
        services:
          a:
            port: 1
            routes:
              - {name: conditions, retries: {attempts: 1, on: [reset]}}
              - {name: codes, retries: {attempts: 1, retriable_status_codes: [502, 429]}}
        """
    )
    conditions, codes = build_ir(parse_mesh(text, "mesh.yaml")).services[0].routes
    assert conditions.retries == ir.RetryPolicy(1, ("reset",), None, ())
    assert codes.retries == ir.RetryPolicy(1, ISTIO_ON, None, (429, 502))


def test_defaults_are_replaced_whole_not_merged() -> None:
    """A route's `retries` does not inherit `per_try_timeout` from the defaults."""
    text = dedent(
        """\
        mesh: m
        defaults: {retries: {attempts: 2, per_try_timeout: 5s}}
        services:
          a: {port: 1, routes: [{name: r, retries: {attempts: 3}}]}
        """
    )
    route = build_ir(parse_mesh(text, "mesh.yaml")).services[0].routes[0]
    assert route.retries is not None
    assert route.retries.per_try_timeout_ms is None


def test_fixture_builds_and_is_deterministic() -> None:
    first = build_ir(load_mesh(FIXTURE))
    assert [s.name for s in first.services] == ["frontend", "ratings", "reviews"]
    assert first == build_ir(load_mesh(FIXTURE))
    assert hash(first) == hash(build_ir(load_mesh(FIXTURE)))
    reviews = first.service("reviews")
    assert reviews is not None
    assert [r.name for r in reviews.routes] == ["testers-to-v2", "canary"]


def test_header_rules_become_value_matches() -> None:
    text = dedent(
        """\
        mesh: m
        services:
          a:
            port: 1
            routes:
              - name: r
                match:
                  headers:
                    x-exact: {exact: e}
                    x-prefix: {prefix: p}
                    x-regex: {regex: "v[0-9]+"}
                    x-present: {present: true}
                    x-absent: {present: false}
        """
    )
    route = build_ir(parse_mesh(text, "mesh.yaml")).services[0].routes[0]
    assert route.match.headers == (
        ir.ValueMatch("x-absent", "absent"),
        ir.ValueMatch("x-exact", "exact", "e"),
        ir.ValueMatch("x-prefix", "prefix", "p"),
        ir.ValueMatch("x-present", "present"),
        ir.ValueMatch("x-regex", "regex", "v[0-9]+"),
    )


IDENTITY_MESH = """
mesh: Shop_1
security: {mtls: permissive}
mixer: {address: 127.0.0.1:18081}
services:
  cart: {port: 8080, security: {mtls: strict}}
  legacy: {port: 8080}
  db: {port: 5432, protocol: tcp, endpoints: [{address: 10.0.0.9, port: 5432}]}
"""


def test_a_secure_mesh_names_each_service_and_the_mixer_by_spiffe_id() -> None:
    mesh = build_ir(parse_mesh(IDENTITY_MESH, "mesh.yaml"))
    assert mesh.trust_domain == "shop_1"
    cart, db, legacy = mesh.services
    assert (cart.spiffe_id, cart.mtls) == ("spiffe://shop_1/service/cart", "strict")
    assert (legacy.spiffe_id, legacy.mtls) == ("spiffe://shop_1/service/legacy", "permissive")
    assert db.spiffe_id is None  # its static endpoint has no sidecar to present one
    assert mesh.mixer is not None
    assert mesh.mixer.spiffe_id == "spiffe://shop_1/service/meshpilot-mixer"


def test_an_insecure_mesh_has_no_identity() -> None:
    mesh = build_ir(parse_mesh(IDENTITY_MESH, "mesh.yaml"), secure=False)
    assert mesh.trust_domain is None
    assert all(s.spiffe_id is None and s.mtls is None for s in mesh.services)


def test_an_ir_builder_builds_again_only_services_whose_spec_changed() -> None:
    from meshpilot.mesh.incremental import MeshReader
    from meshpilot.translator.build import IrBuilder
    from tests.support.meshgen import mesh_yaml

    reader, builder = MeshReader(), IrBuilder()
    first = builder.build(reader.parse(mesh_yaml(3, name="m"), "m.yaml"), Path(), secure=False)
    edited = reader.parse(mesh_yaml(3, name="m", v1_weights={1: 50}), "m.yaml")
    second = builder.build(edited, Path(), secure=False)
    assert second.services[0] is first.services[0] and second.services[2] is first.services[2]
    assert second.services[1] != first.services[1]
    assert second == build_ir(edited, Path(), secure=False)
