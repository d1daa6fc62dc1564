"""Loading mesh files: valid ones give a MeshSpec; invalid ones give every problem, placed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent, indent

import pytest
import yaml

from meshpilot.mesh import compose
from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import load_mesh, parse_mesh
from meshpilot.mesh.schema import MeshSpec

FIXTURE = Path(__file__).parent / "fixtures" / "valid-mesh.yaml"

REVIEWS = """\
mesh: m
services:
  reviews:
    port: 9080
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
"""


def reviews(routes: str) -> str:
    """A mesh whose `reviews` service (subsets v1, v2) has `routes`, starting on line 7."""
    return REVIEWS + indent(dedent(routes), " " * 6)


def problems(text: str, filename: str = "mesh.yaml") -> list[str]:
    with pytest.raises(MeshInvalid) as raised:
        parse_mesh(text, filename)
    return [problem.format() for problem in raised.value.problems]


# --- valid files ------------------------------------------------------------------------------


def test_fixture_loads() -> None:
    spec = load_mesh(FIXTURE)
    assert isinstance(spec, MeshSpec)
    assert spec.mesh == "demo"
    assert list(spec.services) == ["reviews", "ratings", "frontend"]
    reviews_spec = spec.services["reviews"]
    assert reviews_spec.port == 9080
    assert [route.name for route in reviews_spec.routes] == ["testers-to-v2", "canary"]
    canary = reviews_spec.routes[1]
    assert [(d.subset, d.weight) for d in canary.to or []] == [("v1", 90), ("v2", 10)]
    assert canary.retries is not None
    assert canary.retries.on == ["5xx"]
    assert canary.fault is not None
    assert canary.fault.model_dump() == {
        "delay": {"fixed": "100ms", "percent": 10},
        "abort": {"status": 503, "grpc_status": None, "percent": 1},
    }
    assert spec.policies is not None and len(spec.policies) == 2


def test_minimal_mesh() -> None:
    spec = parse_mesh("mesh: m\n", "mesh.yaml")
    assert spec.mesh == "m"
    assert spec.services == {}
    assert spec.defaults is None


def test_retry_key_on_stays_a_key() -> None:
    """YAML 1.1 reads a bare `on` as true; as a key it must stay the text 'on'."""
    spec = parse_mesh(reviews("- {name: r, retries: {attempts: 1, on: [5xx, reset]}}\n"), "m")
    retries = spec.services["reviews"].routes[0].retries
    assert retries is not None
    assert retries.on == ["5xx", "reset"]


def test_retry_on_has_a_default() -> None:
    spec = parse_mesh(reviews("- {name: r, retries: {attempts: 2}}\n"), "m")
    retries = spec.services["reviews"].routes[0].retries
    assert retries is not None
    assert retries.conditions == ("connect-failure", "refused-stream", "unavailable", "cancelled")
    assert retries.status_codes == (503,)


def test_yaml_anchors_and_merge_keys() -> None:
    text = dedent(
        """\
        mesh: m
        services:
          a: &base
            port: 80
            subsets: {v1: {version: v1}}
          b:
            <<: *base
            protocol: grpc
          c:
            <<: [{port: 1}, *base]
        """
    )
    spec = parse_mesh(text, "mesh.yaml")
    assert spec.services["b"].port == 80
    assert spec.services["b"].protocol == "grpc"
    assert spec.services["b"].subsets == {"v1": {"version": "v1"}}
    assert spec.services["c"].port == 1  # the earlier merged mapping wins


def test_problem_inside_a_merged_mapping_points_at_its_source() -> None:
    text = "mesh: m\nbase: &b {port: x}\n"
    assert problems(text + "services:\n  a: {<<: *b}\n") == [
        "mesh.yaml:2:1: base: unknown key 'base'; expected one of: mesh, defaults, services, "
        "mixer, telemetry, policies, security, gateways",
        "mesh.yaml:2:17: services.a.port: expected an integer, got string 'x'",
    ]


def test_quoted_numbers_are_text_where_text_is_expected() -> None:
    spec = parse_mesh("mesh: '1'\nservices:\n  a: {port: 1, subsets: {v1: {n: '1'}}}\n", "m")
    assert spec.mesh == "1"
    assert spec.services["a"].subsets == {"v1": {"n": "1"}}


# --- invalid files: every rule, with the exact report ---------------------------------------

INVALID = [
    pytest.param(
        dedent(
            """\
            mesh: m
            service: {}
            """
        ),
        [
            "mesh.yaml:2:1: service: unknown key 'service'; did you mean 'services'?",
        ],
        id="unknown-top-key",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            zzz: 1
            """
        ),
        [
            "mesh.yaml:2:1: zzz: unknown key 'zzz'; expected one of: mesh, defaults, services, "
            "mixer, telemetry, policies, security, gateways",
        ],
        id="unknown-key-no-suggestion",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              reviews: {port: 9080, protcol: http}
            """
        ),
        [
            "mesh.yaml:3:25: services.reviews.protcol: unknown key 'protcol'; did you mean "
            "'protocol'?",
        ],
        id="unknown-service-key",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, timout: 2s}
            """
        ),
        [
            "mesh.yaml:7:19: services.reviews.routes[0].timout: unknown key 'timout'; did you "
            "mean 'timeout'?",
        ],
        id="unknown-route-key",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, match: {path_prefx: /}}
            """
        ),
        [
            "mesh.yaml:7:27: services.reviews.routes[0].match.path_prefx: unknown key "
            "'path_prefx'; did you mean 'path_prefix'?",
        ],
        id="unknown-match-key",
    ),
    pytest.param(
        dedent(
            """\
            services: {}
            """
        ),
        [
            "mesh.yaml:1:1: <root>: missing required key 'mesh'",
        ],
        id="missing-mesh",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              reviews:
                protocol: http
            """
        ),
        [
            "mesh.yaml:3:3: services.reviews: missing required key 'port'",
        ],
        id="missing-port",
    ),
    pytest.param(
        reviews(
            """\
            - {name: route-1, to: [{subset: v1}]}
            - to: [{subset: v1}]
            """
        ),
        [
            "mesh.yaml:8:9: services.reviews.routes[1]: this route has no name, and the one it "
            "would get, 'route-1', is taken by routes[0]; give it a name",
        ],
        id="unnamed-route-whose-derived-name-is-taken",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, retries: {attempt: 3}}
            """
        ),
        [
            "mesh.yaml:7:19: services.reviews.routes[0].retries: missing required key 'attempts'",
            "mesh.yaml:7:29: services.reviews.routes[0].retries.attempt: unknown key 'attempt'; "
            "did you mean 'attempts'?",
        ],
        id="retries-misspelled",
    ),
    pytest.param(
        dedent(
            """\
            mesh: 5
            services:
              reviews:
                port: '9080'
                subsets: [v1]
                endpoints: {address: x}
            """
        ),
        [
            "mesh.yaml:1:7: mesh: expected a string, got integer 5; put it in quotes if it is "
            "meant as text",
            "mesh.yaml:4:11: services.reviews.port: expected an integer, got string '9080'",
            "mesh.yaml:5:14: services.reviews.subsets: expected a mapping, got a list",
            "mesh.yaml:6:16: services.reviews.endpoints: expected a list, got a mapping",
        ],
        id="wrong-types",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              reviews: {port: true}
            """
        ),
        [
            "mesh.yaml:3:19: services.reviews.port: expected an integer, got boolean true",
        ],
        id="port-bool",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              reviews:
                port: 1
                subsets: {v1: {version: 1}}
                endpoints: [{address: 10.0.0.1, port: 80, labels: {version: 1.5}}]
            """
        ),
        [
            "mesh.yaml:5:29: services.reviews.subsets.v1.version: expected a string, got "
            "integer 1; put it in quotes if it is meant as text",
            "mesh.yaml:6:65: services.reviews.endpoints[0].labels.version: expected a string, "
            "got number 1.5; put it in quotes if it is meant as text",
        ],
        id="label-not-string",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a: {port: 0}
              b: {port: 65536}
              c: {port: 80, endpoints: [{address: x, port: -1}]}
            """
        ),
        [
            "mesh.yaml:3:13: services.a.port: must be 1 or more, got integer 0",
            "mesh.yaml:4:13: services.b.port: must be 65535 or less, got integer 65536",
            "mesh.yaml:5:48: services.c.endpoints[0].port: must be 1 or more, got integer -1",
        ],
        id="port-range",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a: {port: 1, protocol: udp}
              b: {port: 1, protocol: HTTP}
            """
        ),
        [
            "mesh.yaml:3:26: services.a.protocol: expected one of http, http2, grpc, tcp; got "
            "string 'udp'",
            "mesh.yaml:4:26: services.b.protocol: unknown value 'HTTP'; did you mean 'http'?",
        ],
        id="protocol",
    ),
    pytest.param(
        reviews(
            """\
            - name: r
              to:
                - {subset: v1, weight: 90}
                - {subset: v2, weight: 20}
            """
        ),
        [
            "mesh.yaml:9:11: services.reviews.routes[0].to: weights add up to 110; they must "
            "add up to 100",
        ],
        id="weights-sum",
    ),
    pytest.param(
        reviews(
            """\
            - name: r
              to:
                - {subset: v1, weight: 90}
                - {subset: v2}
            """
        ),
        [
            "mesh.yaml:10:13: services.reviews.routes[0].to[1]: this entry needs a 'weight': "
            "'to' has 2 entries, so each one needs a weight",
        ],
        id="weights-missing",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, to: [{subset: v1, weight: 50}]}
            """
        ),
        [
            "mesh.yaml:7:23: services.reviews.routes[0].to: weights add up to 50; they must add "
            "up to 100",
        ],
        id="weight-single",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, to: [{subset: v1, weight: 50.5}, {subset: v2, weight: '50'}]}
            - {name: s, to: [{subset: v1, weight: 101}, {subset: v2, weight: -1}]}
            """
        ),
        [
            "mesh.yaml:7:45: services.reviews.routes[0].to[0].weight: expected an integer, got "
            "number 50.5",
            "mesh.yaml:7:73: services.reviews.routes[0].to[1].weight: expected an integer, got "
            "string '50'",
            "mesh.yaml:8:45: services.reviews.routes[1].to[0].weight: must be 100 or less, got "
            "integer 101",
            "mesh.yaml:8:72: services.reviews.routes[1].to[1].weight: must be 0 or more, got "
            "integer -1",
        ],
        id="weight-types",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, to: []}
            """
        ),
        [
            "mesh.yaml:7:23: services.reviews.routes[0].to: must not be empty",
        ],
        id="to-empty",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, to: [{subset: V1, weight: 50}, {subset: v3, weight: 50}]}
            """
        ),
        [
            "mesh.yaml:7:33: services.reviews.routes[0].to[0].subset: unknown subset 'V1' in "
            "this service; did you mean 'v1'?",
            "mesh.yaml:7:59: services.reviews.routes[0].to[1].subset: unknown subset 'v3' in "
            "this service; known subsets: v1, v2",
        ],
        id="unknown-subset",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a:
                port: 1
                routes: [{name: r, to: [{subset: v1}]}]
            """
        ),
        [
            "mesh.yaml:5:38: services.a.routes[0].to[0].subset: unknown subset 'v1': this "
            "service defines no subsets",
        ],
        id="no-subsets",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            defaults: {timeout: 2}
            services:
              a:
                port: 1
                routes:
                  - {name: r, timeout: 2d, retries: {attempts: 1, per_try_timeout: -1s}}
                  - {name: s, timeout: 1.5ms}
                  - {name: t, timeout: true}
            """
        ),
        [
            "mesh.yaml:2:21: defaults.timeout: a duration needs a unit: write '2s' or '2ms'",
            "mesh.yaml:7:28: services.a.routes[0].timeout: duration '2d' has unknown unit 'd'; "
            "use ms, s, m or h",
            "mesh.yaml:7:72: services.a.routes[0].retries.per_try_timeout: duration '-1s' is "
            "negative; durations must be 0 or more",
            "mesh.yaml:8:28: services.a.routes[1].timeout: duration '1.5ms' is not a whole "
            "number of milliseconds",
            "mesh.yaml:9:28: services.a.routes[2].timeout: expected a string, got boolean true; "
            "put it in quotes if it is meant as text",
        ],
        id="durations",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r}
            - {name: s}
            - {name: r}
            - {name: r}
            """
        ),
        [
            "mesh.yaml:9:16: services.reviews.routes[2].name: duplicate route name 'r' (also "
            "used by routes[0])",
            "mesh.yaml:10:16: services.reviews.routes[3].name: duplicate route name 'r' (also "
            "used by routes[0])",
        ],
        id="duplicate-route-names",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a:
                port: 1
                port: 2
              a: {port: 3}
            mesh: n
            """
        ),
        [
            "mesh.yaml:5:5: services.a.port: duplicate key 'port' (first on line 4)",
            "mesh.yaml:6:3: services.a: duplicate key 'a' (first on line 3)",
            "mesh.yaml:7:1: mesh: duplicate key 'mesh' (first on line 1)",
        ],
        id="duplicate-yaml-keys",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              Reviews: {port: 1}
              my_svc: {port: 1}
              -a: {port: 1}
              aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: {port: 1}
              a.b: {port: 1}
              meshpilot-mixer: {port: 1}
            """
        ),
        [
            "mesh.yaml:3:3: services.Reviews: service name 'Reviews' is not a DNS label: use "
            "lowercase letters, digits and '-', start and end with a letter or digit, at most "
            "63 characters; did you mean 'reviews'?",
            "mesh.yaml:4:3: services.my_svc: service name 'my_svc' is not a DNS label: use "
            "lowercase letters, digits and '-', start and end with a letter or digit, at most "
            "63 characters; did you mean 'my-svc'?",
            "mesh.yaml:5:3: services.-a: service name '-a' is not a DNS label: use lowercase "
            "letters, digits and '-', start and end with a letter or digit, at most 63 "
            "characters; did you mean 'a'?",
            "mesh.yaml:6:3: "
            "services.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: service "
            "name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' is not a "
            "DNS label: use lowercase letters, digits and '-', start and end with a letter or "
            "digit, at most 63 characters",
            "mesh.yaml:7:3: services[\"a.b\"]: service name 'a.b' is not a DNS label: use "
            "lowercase letters, digits and '-', start and end with a letter or digit, at most "
            "63 characters; did you mean 'a-b'?",
            "mesh.yaml:8:3: services.meshpilot-mixer: 'meshpilot-mixer' is the mixer's identity: "
            "a service cannot take it",
        ],
        id="service-names",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, match: {headers: {bad name: x, X-User: a, x-user: b, x-n: 1}}}
            """
        ),
        [
            "mesh.yaml:7:37: services.reviews.routes[0].match.headers[\"bad name\"]: 'bad name' "
            "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
            "mesh.yaml:7:61: services.reviews.routes[0].match.headers.x-user: header 'x-user' "
            "is the same as 'X-User': header names ignore case",
            "mesh.yaml:7:77: services.reviews.routes[0].match.headers.x-n: expected a string, "
            "got integer 1; put it in quotes if it is meant as text",
        ],
        id="header-names",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, match: {methods: [get, FETCH, GET]}}
            - {name: s, match: {methods: GET}}
            """
        ),
        [
            "mesh.yaml:7:37: services.reviews.routes[0].match.methods[0]: unknown value 'get'; "
            "did you mean 'GET'?",
            "mesh.yaml:7:42: services.reviews.routes[0].match.methods[1]: unknown value "
            "'FETCH'; did you mean 'PATCH'?",
            "mesh.yaml:8:36: services.reviews.routes[1].match.methods: expected a list, got "
            "string 'GET'",
        ],
        id="methods",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, match: {path: api}}
            - {name: s, match: {path_prefix: api/}}
            - {name: t, match: {path: /a, path_prefix: /}}
            """
        ),
        [
            "mesh.yaml:7:33: services.reviews.routes[0].match.path: 'api' must start with '/'",
            "mesh.yaml:8:40: services.reviews.routes[1].match.path_prefix: 'api/' must start "
            "with '/'",
            "mesh.yaml:9:26: services.reviews.routes[2].match: give one of 'path', "
            "'path_prefix' or 'path_regex', not path and path_prefix",
        ],
        id="paths",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            defaults:
              retries: {attempts: -1, on: [5XX, connect_failure, bogus]}
            services: {}
            """
        ),
        [
            "mesh.yaml:3:23: defaults.retries.attempts: must be 0 or more, got integer -1",
            "mesh.yaml:3:32: defaults.retries.on[0]: unknown value '5XX'; did you mean '5xx'?",
            "mesh.yaml:3:37: defaults.retries.on[1]: unknown value 'connect_failure'; did you "
            "mean 'connect-failure'?",
            "mesh.yaml:3:54: defaults.retries.on[2]: expected one of 5xx, gateway-error, reset, "
            "reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, "
            "refused-stream, "
            "http3-post-connect-failure, cancelled, deadline-exceeded, internal, "
            "resource-exhausted, unavailable; got string 'bogus'",
        ],
        id="retry-on",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            defaults:
              retries: {attempts: 2, on: []}
            services: {}
            """
        ),
        [
            "mesh.yaml:3:12: defaults.retries: 'on' is empty, so nothing would be retried; list "
            "a condition",
        ],
        id="retry-on-empty",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a: {port: 1
              b: {port: 2}
            """
        ),
        [
            "mesh.yaml:4:4: <root>: invalid YAML: did not find expected ',' or '}' (while "
            "parsing a flow mapping at 3:6)",
        ],
        id="yaml-syntax",
    ),
    pytest.param(
        "mesh: m\nservices:\n\ta: 1\n",
        [
            "mesh.yaml:3:1: <root>: invalid YAML: found character that cannot start any token "
            "(while scanning for the next token); YAML indents with spaces, never tabs",
        ],
        id="yaml-tab",
    ),
    pytest.param(
        dedent(
            """\
            - mesh: m
            """
        ),
        [
            "mesh.yaml:1:1: <root>: the file must be a mapping of keys such as 'mesh', got a list",
        ],
        id="top-list",
    ),
    pytest.param(
        dedent(
            """\
            just text
            """
        ),
        [
            "mesh.yaml:1:1: <root>: the file must be a mapping of keys such as 'mesh', got "
            "string 'just text'",
        ],
        id="top-scalar",
    ),
    pytest.param(
        dedent(
            """\
            # nothing here
            """
        ),
        [
            "mesh.yaml:1:1: <root>: the file is empty; a mesh file is a mapping that starts "
            "with 'mesh: NAME'",
        ],
        id="empty",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            ---
            mesh: n
            """
        ),
        [
            "mesh.yaml:2:1: <root>: invalid YAML: expected a single document in the stream at "
            "1:1, but found another document",
        ],
        id="two-documents",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            ? [a, b]
            : 1
            """
        ),
        [
            "mesh.yaml:2:3: <root>: a key must be a plain string, not a mapping or list",
        ],
        id="complex-key",
    ),
    pytest.param(
        dedent(
            """\
            mesh: !custom m
            services:
              a: {port: !!int eighty}
            """
        ),
        [
            "mesh.yaml:1:7: mesh: tag '!custom' is not supported here",
            "mesh.yaml:3:13: services.a.port: cannot read 'eighty' as !!int",
        ],
        id="tags",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            mixer: 127.0.0.1:18081
            policies: {name: p}
            services:
              a: {port: 1, run: {command: x}, load_balancer: [round_robin]}
            """
        ),
        [
            "mesh.yaml:2:8: mixer: expected a mapping, got string '127.0.0.1:18081'",
            "mesh.yaml:3:11: policies: expected a list, got a mapping",
            "mesh.yaml:5:21: services.a.run: expected a list, got a mapping",
            "mesh.yaml:5:50: services.a.load_balancer: expected one of round_robin, least_request, "
            "random, ring_hash, maglev; got a list",
        ],
        id="ignored-keys-wrong-shape",
    ),
    pytest.param(
        reviews(
            """\
            - {name: r, match: [path]}
            """
        ),
        [
            "mesh.yaml:7:26: services.reviews.routes[0].match: expected a mapping, got a list",
        ],
        id="match-not-mapping",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a:
                port: 1
                endpoints:
                  - {port: 0}
                  - {address: '', port: 80, zone: a}
            """
        ),
        [
            "mesh.yaml:6:9: services.a.endpoints[0]: missing required key 'address'",
            "mesh.yaml:6:16: services.a.endpoints[0].port: must be 1 or more, got integer 0",
            "mesh.yaml:7:19: services.a.endpoints[1].address: '' is neither an IP address "
            "nor a DNS name",
            "mesh.yaml:7:33: services.a.endpoints[1].zone: unknown key 'zone'; expected one of: "
            "address, port, labels, locality",
        ],
        id="endpoint",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a:
            """
        ),
        [
            "mesh.yaml:3:5: services.a: expected a mapping, got nothing (null)",
        ],
        id="null-service",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a: {port: 1, protocol: on}
            """
        ),
        [
            "mesh.yaml:3:26: services.a.protocol: expected one of http, http2, grpc, tcp; got "
            "boolean true",
        ],
        id="on-as-bool-value",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a: {<<: [1], port: 1}
            """
        ),
        [
            "mesh.yaml:3:12: services.a: '<<' merges a mapping or a list of mappings",
        ],
        id="merge-bad",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services: &s
              a: *s
            """
        ),
        [
            "mesh.yaml:2:11: services.a: an alias refers to a node that contains it",
            "mesh.yaml:2:11: services.a: expected a mapping, got nothing (null)",
        ],
        id="alias-cycle",
    ),
    pytest.param(
        dedent(
            """\
            mesh: demo
            defaults:
              timeout: 15
            services:
              reviews:
                port: 9080
                protocol: htp
                subsets:
                  v1: {version: v1}
                routes:
                  - name: canary
                    match: {path_prefix: reviews, methods: [get]}
                    to:
                      - {subset: v1, weight: 90}
                      - {subset: v2, weight: 20}
                    retries: {attempts: 3, on: [5xx], per_try_timout: 1s}
                  - name: canary
              Ratings:
                prt: 9080
            """
        ),
        [
            "mesh.yaml:3:12: defaults.timeout: a duration needs a unit: write '15s' or '15ms'",
            "mesh.yaml:7:15: services.reviews.protocol: unknown value 'htp'; did you mean 'http'?",
            "mesh.yaml:12:30: services.reviews.routes[0].match.path_prefix: 'reviews' must "
            "start with '/'",
            "mesh.yaml:12:49: services.reviews.routes[0].match.methods[0]: unknown value 'get'; "
            "did you mean 'GET'?",
            "mesh.yaml:14:11: services.reviews.routes[0].to: weights add up to 110; they must "
            "add up to 100",
            "mesh.yaml:15:22: services.reviews.routes[0].to[1].subset: unknown subset 'v2' in "
            "this service; known subsets: v1",
            "mesh.yaml:16:43: services.reviews.routes[0].retries.per_try_timout: unknown key "
            "'per_try_timout'; did you mean 'per_try_timeout'?",
            "mesh.yaml:17:15: services.reviews.routes[1].name: duplicate route name 'canary' "
            "(also used by routes[0])",
            "mesh.yaml:18:3: services.Ratings: missing required key 'port'",
            "mesh.yaml:18:3: services.Ratings: service name 'Ratings' is not a DNS label: use "
            "lowercase letters, digits and '-', start and end with a letter or digit, at most "
            "63 characters; did you mean 'ratings'?",
            "mesh.yaml:19:5: services.Ratings.prt: unknown key 'prt'; did you mean 'port'?",
        ],
        id="many",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            security:
              mtls: strik
              trust_domain: Bad Domain
              certificate_ttl: 59s
              ca: {cert: ""}
              rotate: true
            """
        ),
        [
            "mesh.yaml:3:9: security.mtls: unknown value 'strik'; did you mean 'strict'?",
            "mesh.yaml:4:17: security.trust_domain: 'Bad Domain' is not a SPIFFE trust domain: "
            "use 1 to 255 lower-case letters, digits, '.', '-' or '_'",
            "mesh.yaml:5:20: security.certificate_ttl: a certificate lifetime must be from 60s "
            "to 2160h (90 days)",
            "mesh.yaml:6:3: security.ca: missing required key 'key'",
            "mesh.yaml:6:14: security.ca.cert: must not be empty",
            "mesh.yaml:7:3: security.rotate: unknown key 'rotate'; expected one of: mtls, ca, "
            "trust_domain, certificate_ttl",
        ],
        id="security",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            security: {certificate_ttl: 2161h}
            services:
              a: {port: 1, security: {mtls: off}}
              b: {port: 2, security: {mode: strict}}
            """
        ),
        [
            "mesh.yaml:2:29: security.certificate_ttl: a certificate lifetime must be from 60s "
            "to 2160h (90 days)",
            "mesh.yaml:4:33: services.a.security.mtls: expected one of strict, permissive; got "
            "boolean false",
            "mesh.yaml:5:27: services.b.security.mode: unknown key 'mode'; expected one of: mtls",
        ],
        id="security-ttl-and-service-override",
    ),
    pytest.param(
        dedent(
            """\
            mesh: "日本"
            security: {certificate_ttl: 24}
            """
        ),
        [
            "mesh.yaml:1:7: mesh: no SPIFFE trust domain can be made from mesh name '日本'; "
            "set 'security.trust_domain'",
            "mesh.yaml:2:29: security.certificate_ttl: a duration needs a unit: write '24s' or "
            "'24ms'",
        ],
        id="security-trust-domain-from-mesh-name",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            telemetry:
              tracing: {sampling: 101, collector: zipkin}
            services:
              a:
                port: 1
                tracing: {sampling: 5, collector: 127.0.0.1:9411}
              b: {port: 2, tracing: {collector: 127.0.0.1:9411}}
            """
        ),
        [
            "mesh.yaml:3:23: telemetry.tracing.sampling: must be 100 or less, got integer 101",
            "mesh.yaml:3:39: telemetry.tracing.collector: 'zipkin' is not HOST:PORT (e.g. "
            "127.0.0.1:9411)",
            "mesh.yaml:7:28: services.a.tracing.collector: unknown key 'collector'; expected one "
            "of: sampling",
            "mesh.yaml:8:16: services.b.tracing: missing required key 'sampling'",
            "mesh.yaml:8:26: services.b.tracing.collector: unknown key 'collector'; expected one "
            "of: sampling",
        ],
        id="tracing-collector-mesh-wide-only",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            telemetry:
              tracing: {sampling: 1, collector: "zip kin:9411"}
            """
        ),
        [
            "mesh.yaml:3:37: telemetry.tracing.collector: 'zip kin' is neither an IP address nor a "
            "DNS name"
        ],
        id="tracing-collector-host",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            telemetry:
              tracing: {sampling: 1, collector: "127.0.0.1:0"}
            """
        ),
        [
            "mesh.yaml:3:37: telemetry.tracing.collector: '127.0.0.1:0' is not HOST:PORT (e.g. "
            "127.0.0.1:9411)"
        ],
        id="tracing-collector-port",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            telemetry:
              tracing: {sampling: 1, collector: "otel:4317", protocol: otlp}
            """
        ),
        [
            "mesh.yaml:3:60: telemetry.tracing.protocol: expected one of zipkin, opentelemetry; "
            "got string 'otlp'",
        ],
        id="tracing-protocol",
    ),
    pytest.param(
        dedent(
            """\
            mesh: m
            services:
              a:
                port: 1
                load_balancer: {policy: random, warmup: 10s}
                circuit_breaker: {max_requests_per_connection: 0}
                outlier_detection: {min_health_percent: 120}
                tcp_keepalive: {time: 1500ms, interval: 0s, probes: 0}
              db:
                port: 5432
                protocol: tcp
                idle_timeout: 1m
                subsets: {v1: {version: v1}}
                subset_policies:
                  v1: {circuit_breaker: {max_requests_per_connection: 1}, idle_timeout: 1m}
            """
        ),
        [
            "mesh.yaml:5:20: services.a.load_balancer: 'warmup' only applies to round_robin and "
            "least_request, not random",
            "mesh.yaml:6:52: services.a.circuit_breaker.max_requests_per_connection: must be 1 or "
            "more, got integer 0",
            "mesh.yaml:7:45: services.a.outlier_detection.min_health_percent: must be 100 or less, "
            "got integer 120",
            "mesh.yaml:8:27: services.a.tcp_keepalive.time: must be a whole number of seconds, at "
            "least 1s",
            "mesh.yaml:8:45: services.a.tcp_keepalive.interval: must be a whole number of seconds, "
            "at least 1s",
            "mesh.yaml:8:57: services.a.tcp_keepalive.probes: must be 1 or more, got integer 0",
            "mesh.yaml:12:5: services.db.idle_timeout: 'idle_timeout' applies to HTTP, not tcp",
            "mesh.yaml:15:30: services.db.subset_policies.v1.circuit_breaker."
            "max_requests_per_connection: 'max_requests_per_connection' applies to HTTP, not tcp",
            "mesh.yaml:15:63: services.db.subset_policies.v1.idle_timeout: 'idle_timeout' applies "
            "to HTTP, not tcp",
        ],
        id="connection-settings",
    ),
    pytest.param(
        "mesh: m\nservices: {a: {port: 1}}\n# \x07 bell \x00\n",
        ["mesh.yaml:3:3: <root>: character U+0007 is not allowed in YAML (1 more in the file)"],
        id="control-characters",
    ),
]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_invalid_mesh(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_every_layer_reports_in_one_go() -> None:
    """A duplicate YAML key, type and value errors, and cross-field rules: all come back at once,
    sorted by position, none hidden behind another."""
    text = dedent(
        """\
        mesh: m
        mesh: again
        services:
          Bad_Name: {port: 0}
          reviews:
            port: 80
            routes:
              - {name: r, to: [{subset: v9}], timeout: 5}
              - {name: r, match: {path: x, methods: [get]}}
        """
    )
    assert problems(text) == [
        "mesh.yaml:2:1: mesh: duplicate key 'mesh' (first on line 1)",
        "mesh.yaml:4:3: services.Bad_Name: service name 'Bad_Name' is not a DNS label: use "
        "lowercase letters, digits and '-', start and end with a letter or digit, at most 63 "
        "characters; did you mean 'bad-name'?",
        "mesh.yaml:4:20: services.Bad_Name.port: must be 1 or more, got integer 0",
        "mesh.yaml:8:33: services.reviews.routes[0].to[0].subset: unknown subset 'v9': this "
        "service defines no subsets",
        "mesh.yaml:8:48: services.reviews.routes[0].timeout: a duration needs a unit: write '5s' "
        "or '5ms'",
        "mesh.yaml:9:16: services.reviews.routes[1].name: duplicate route name 'r' (also used by "
        "routes[0])",
        "mesh.yaml:9:33: services.reviews.routes[1].match.path: 'x' must start with '/'",
        "mesh.yaml:9:46: services.reviews.routes[1].match.methods[0]: unknown value 'get'; did you "
        "mean 'GET'?",
    ]


# --- security ---------------------------------------------------------------------------------


def test_security_defaults() -> None:
    spec = parse_mesh("mesh: m\nservices: {a: {port: 1}}\n", "mesh.yaml")
    assert spec.security.mtls == "strict"
    assert spec.security.ca is None
    assert spec.security.trust_domain is None
    assert spec.security.certificate_ttl == "24h"
    assert spec.services["a"].security is None


def test_security_section_and_service_override() -> None:
    text = dedent(
        """\
        mesh: m
        security:
          mtls: permissive
          trust_domain: prod.example.com
          certificate_ttl: 60s
        services:
          a: {port: 1, security: {mtls: strict}}
          b: {port: 2, security: {}}
        """
    )
    spec = parse_mesh(text, "mesh.yaml")
    assert spec.security.mtls == "permissive"
    assert spec.security.trust_domain == "prod.example.com"
    assert spec.security.certificate_ttl == "60s"
    assert spec.services["a"].security is not None
    assert spec.services["a"].security.mtls == "strict"
    assert spec.services["b"].security is not None
    assert spec.services["b"].security.mtls is None


def test_ca_files_are_found_next_to_the_mesh_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("")
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("mesh: m\nsecurity:\n  ca: {cert: certs/ca.pem, key: certs/ca-key.pem}\n")
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(mesh)
    assert [problem.format() for problem in raised.value.problems] == [
        f"{mesh}:3:33: security.ca.key: '{tmp_path}/certs/ca-key.pem' does not exist"
    ]
    (tmp_path / "certs" / "ca-key.pem").write_text("")
    ca = load_mesh(mesh).security.ca
    assert ca is not None
    assert (ca.cert, ca.key) == ("certs/ca.pem", "certs/ca-key.pem")


# --- files that cannot be read ----------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(path)
    assert [p.format() for p in raised.value.problems] == [
        f"{path}:1:1: <root>: cannot read the file: No such file or directory"
    ]


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(tmp_path)
    assert [p.format() for p in raised.value.problems] == [
        f"{tmp_path}:1:1: <root>: cannot read the file: Is a directory"
    ]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("mesh: m\nservices:\n  caf\xe9: {port: 1}\n".encode("latin-1"))
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(path)
    assert [p.format() for p in raised.value.problems] == [
        f"{path}:3:6: <root>: the file is not UTF-8 text (byte 0xe9 cannot be decoded)"
    ]


def test_binary_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(path)
    assert [p.format() for p in raised.value.problems] == [
        f"{path}:2:118: <root>: the file is not UTF-8 text (byte 0x80 cannot be decoded)"
    ]


def test_control_characters_in_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "nul.yaml"
    path.write_bytes(b"mesh: m\x00\n")
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(path)
    assert [p.format() for p in raised.value.problems] == [
        f"{path}:1:8: <root>: character U+0000 is not allowed in YAML"
    ]


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfmesh: m\n")
    assert load_mesh(path).mesh == "m"


def test_deep_nesting_is_a_problem_not_a_crash() -> None:
    assert problems("mesh: " + "[" * 3000 + "]" * 3000 + "\n")[0].startswith("mesh.yaml:1:")
    assert problems("mesh: m\nx: " + "[" * 600 + "]" * 600 + "\n") == [
        "mesh.yaml:1:1: <root>: the file is nested too deeply"
    ]


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    assert problems("\n".join(lines) + "\n") == [
        "mesh.yaml:1:1: <root>: aliases expand the file to more than 5,000,000 values"
    ]


def test_huge_numbers_are_reported_not_printed() -> None:
    huge = "0x" + "f" * 5000  # more digits than Python will print
    assert problems(
        f"mesh: m\ndefaults: {{timeout: {huge}}}\nservices: {{a: {{port: {huge}}}}}\n"
    ) == [
        "mesh.yaml:2:21: defaults.timeout: a duration needs a unit: write '2s' or '250ms'",
        "mesh.yaml:3:22: services.a.port: must be 65535 or less, got a very large integer",
    ]


# --- YAML parsers: libyaml when PyYAML has it, the same problems from the Python fallback -------


@pytest.fixture(params=compose.LOADERS, ids=lambda loader: loader.__name__)
def yaml_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each YAML parser `parse_mesh` may run on: libyaml's (if present) and the Python one."""
    monkeypatch.setattr(compose, "LOADER", request.param)


def test_libyaml_parses_when_pyyaml_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML was built without libyaml")
    assert issubclass(compose.LOADER, yaml.cyaml.CParser)
    texts = []

    class Recording(compose.LOADER):  # type: ignore[name-defined,misc]
        def __init__(self, stream: str) -> None:
            texts.append(stream)
            super().__init__(stream)

    monkeypatch.setattr(compose, "LOADER", Recording)
    assert parse_mesh("mesh: m\n", "mesh.yaml").mesh == "m"
    assert texts == ["mesh: m\n"]


def test_python_parser_without_libyaml() -> None:
    hide_libyaml = "import sys; sys.modules['yaml._yaml'] = None"
    show = "import yaml; from meshpilot.mesh import compose; print(yaml.__with_libyaml__, "
    show += "compose.LOADER.__name__)"
    run = subprocess.run(
        [sys.executable, "-c", f"{hide_libyaml}; {show}"], capture_output=True, text=True
    )
    assert run.stdout.split() == ["False", "PythonLoader"], run.stderr


YAML_PROBLEMS = [
    pytest.param(
        "mesh: m\nservices:\n  a:\n    port: 1\n    egress: [b, c",
        "6:1: <root>: invalid YAML: did not find expected ',' or ']' (while parsing a flow "
        "sequence at 5:13)",
        id="flow-sequence-open-at-the-end",
    ),
    pytest.param(
        "mesh: m\nservices: a: b\n",
        "2:12: <root>: invalid YAML: mapping values are not allowed in this context",
        id="mapping-value",
    ),
    pytest.param(
        "mesh: m\nservices:\n  a:\n    port: 1\n   protocol: tcp\n",
        "5:4: <root>: invalid YAML: did not find expected key (while parsing a block mapping "
        "at 3:3)",
        id="indentation",
    ),
    pytest.param(
        "mesh: m\nservices:\n  - a\n  b: 1\n",
        "4:3: <root>: invalid YAML: did not find expected '-' indicator (while parsing a block "
        "collection at 3:3)",
        id="mapping-in-list",
    ),
    pytest.param(
        'mesh: "m\n',
        "2:1: <root>: invalid YAML: found unexpected end of stream (while scanning a quoted "
        "scalar at 1:7)",
        id="unclosed-quote",
    ),
    pytest.param(
        "mesh: m\nservices: *all\n",
        "2:11: <root>: invalid YAML: found undefined alias",
        id="undefined-alias",
    ),
    pytest.param(
        "mesh: & m\n",
        "1:8: <root>: invalid YAML: did not find expected alphabetic or numeric character "
        "(while scanning an anchor at 1:7)",
        id="empty-anchor",
    ),
    pytest.param(
        "mesh: `m`\n",
        "1:7: <root>: invalid YAML: found character that cannot start any token (while "
        "scanning for the next token)",
        id="backtick",
    ),
    pytest.param(
        "mesh: m\nservices",
        "3:1: <root>: invalid YAML: could not find expected ':' (while scanning a simple key "
        "at 2:1)",
        id="key-without-colon-at-the-end",
    ),
    pytest.param(
        "mesh: !<x m\n",
        "1:10: <root>: invalid YAML: did not find the expected '>' (while scanning a tag at 1:7)",
        id="unclosed-tag",
    ),
    pytest.param(
        'mesh: m\nservices:\n  a:\n    port: 1\n    tls: {ca_file: "C:\\certs\\ca.pem"}\n',
        "5:23: <root>: invalid YAML: found unknown escape character (while parsing a quoted "
        "scalar at 5:20)",
        id="unknown-escape",
    ),
    pytest.param(
        "mesh: ]\n",
        "1:7: <root>: invalid YAML: did not find expected node content (while parsing a block "
        "node)",
        id="closing-bracket",
    ),
    pytest.param(
        "mesh: m\n... x\n",
        "2:5: <root>: invalid YAML: did not find expected <document start>",
        id="text-after-document-end",
    ),
    pytest.param(
        "mesh: |x\n  m\n",
        "1:8: <root>: invalid YAML: did not find expected comment or line break (while "
        "scanning a block scalar at 1:7)",
        id="block-scalar-indicator",
    ),
    pytest.param(
        "%YAML 2.0\n---\nmesh: m\n",
        "1:1: <root>: invalid YAML: found incompatible YAML document",
        id="yaml-version",
    ),
    pytest.param(
        "mesh: m\nservices: - a\n",
        "2:11: <root>: invalid YAML: block sequence entries are not allowed in this context",
        id="list-entry-after-key",
    ),
    pytest.param(
        "mesh: &x ? a\n",
        "1:10: <root>: invalid YAML: mapping keys are not allowed in this context",
        id="complex-key-after-anchor",
    ),
    pytest.param(
        "mesh: m\nservices:\n  a: {port: 1}\n  a: {port: 2}\n",
        "4:3: services.a: duplicate key 'a' (first on line 3)",
        id="duplicate-key",
    ),
    pytest.param(
        "mesh: m\nservices:\n  a:\n    port: 1\n    protocl: tcp\n",
        "5:5: services.a.protocl: unknown key 'protocl'; did you mean 'protocol'?",
        id="unknown-key",
    ),
]


@pytest.mark.usefixtures("yaml_parser")
@pytest.mark.parametrize(("text", "expected"), YAML_PROBLEMS)
def test_yaml_problem_reads_the_same_with_either_parser(text: str, expected: str) -> None:
    assert problems(text) == [f"mesh.yaml:{expected}"]


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_invalid_mesh_with_the_python_parser(
    text: str, expected: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compose, "LOADER", compose.PythonLoader)
    assert problems(text) == expected


def test_valid_mesh_reads_the_same_with_either_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """Same values, and every node at the same line:col (problems are placed by these marks)."""
    text = FIXTURE.read_text()
    specs, marks = [], []
    for loader in compose.LOADERS:
        monkeypatch.setattr(compose, "LOADER", loader)
        specs.append(load_mesh(FIXTURE))
        marks.append(list(_marks(compose.compose(text, "mesh.yaml"))))
    assert all(spec == specs[0] for spec in specs)
    assert all(found == marks[0] for found in marks)
    assert len(marks[0]) > 100


def _marks(node: yaml.Node | None) -> Iterator[tuple[str, object, int, int]]:
    """Every node of a tree, in order: its tag, scalar value and line:col."""
    if node is None:
        return
    value = node.value if isinstance(node, yaml.ScalarNode) else None
    yield node.tag, value, node.start_mark.line, node.start_mark.column
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _marks(item)
    elif isinstance(node, yaml.MappingNode):
        for key, item in node.value:
            yield from _marks(key)
            yield from _marks(item)
