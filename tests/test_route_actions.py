"""Route actions in the mesh file: Host and regex path rewrites, redirects, direct responses and
case-insensitive matching; the problems each can have, placed, and the Envoy config each becomes."""

from __future__ import annotations

import pytest
from envoy.config.route.v3 import route_components_pb2 as rc

from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir
from meshpilot.model.match import policy_matches, value_matches
from meshpilot.translator.build import build_ir
from meshpilot.translator.envoy import route
from meshpilot.translator.envoy.ext_authz import policy_predicate
from meshpilot.translator.services import translate_service
from tests.test_mesh_load import problems, reviews


def built_route(routes: str) -> ir.Route:
    """The first route of reviews with `routes`, as the IR has it."""
    return build_ir(parse_mesh(reviews(routes), "mesh.yaml")).services[0].routes[0]


def envoy_route(r: ir.Route, rewrite_host: bool = False) -> rc.Route:
    service = ir.Service("reviews", 9080, "http", routes=(r,))
    return route.route(service, r, lambda subset: f"cluster-{subset}", rewrite_host=rewrite_host)


# --- rewrites ---------------------------------------------------------------------------------


def test_an_authority_and_a_regex_rewrite_become_the_route_actions_rewrites() -> None:
    r = built_route(
        """\
        - rewrite:
            authority: api.internal:8080
            regex: {pattern: "^/users/([0-9]+)/(.*)$", substitution: "/v2/\\\\2?user=\\\\1"}
        """
    )
    assert r.host_rewrite == "api.internal:8080"
    assert r.regex_rewrite == ir.RegexRewrite("^/users/([0-9]+)/(.*)$", "/v2/\\2?user=\\1")
    action = envoy_route(r).route
    assert action.host_rewrite_literal == "api.internal:8080"
    assert action.regex_rewrite.pattern.regex == "^/users/([0-9]+)/(.*)$"
    assert action.regex_rewrite.substitution == "/v2/\\2?user=\\1"
    assert not action.prefix_rewrite


def test_an_authority_rewrite_wins_over_an_external_services_own_host() -> None:
    r = built_route("- rewrite: {authority: example.org}\n")
    action = envoy_route(r, rewrite_host=True).route
    assert action.WhichOneof("host_rewrite_specifier") == "host_rewrite_literal"
    plain = envoy_route(built_route("- rewrite: {prefix: /x}\n"), rewrite_host=True).route
    assert plain.WhichOneof("host_rewrite_specifier") == "auto_host_rewrite"


REWRITE_PROBLEMS = [
    pytest.param(
        "- rewrite: {prefix: /a, regex: {pattern: /b, substitution: /c}}\n",
        [
            "mesh.yaml:7:18: services.reviews.routes[0].rewrite: give one of 'prefix' or "
            "'regex': both rewrite the path",
        ],
        id="prefix-and-regex",
    ),
    pytest.param(
        "- rewrite: {}\n",
        [
            "mesh.yaml:7:18: services.reviews.routes[0].rewrite: give 'prefix', 'regex' or "
            "'authority'",
        ],
        id="empty",
    ),
    pytest.param(
        "- rewrite: {regex: {pattern: '/(a', substitution: /}}\n",
        [
            "mesh.yaml:7:36: services.reviews.routes[0].rewrite.regex.pattern: invalid regular "
            "expression: missing ), unterminated subpattern at position 1",
        ],
        id="pattern-does-not-compile",
    ),
    pytest.param(
        "- rewrite: {regex: {pattern: '/(?=a)', substitution: /}}\n",
        [
            "mesh.yaml:7:36: services.reviews.routes[0].rewrite.regex.pattern: Envoy's regular "
            "expressions (RE2) refuse it: invalid perl operator: (?=",
        ],
        id="pattern-not-re2",
    ),
    pytest.param(
        "- rewrite: {regex: {pattern: '/a*+', substitution: /}}\n",
        [
            "mesh.yaml:7:36: services.reviews.routes[0].rewrite.regex.pattern: Envoy's regular "
            "expressions (RE2) refuse it: bad repetition operator: *+",
        ],
        id="pattern-python-accepts-re2-refuses",
    ),
    pytest.param(
        "- rewrite: {regex: {pattern: '/(a)', substitution: '/\\2'}}\n",
        [
            "mesh.yaml:7:26: services.reviews.routes[0].rewrite.regex: '\\2' names a group the "
            "pattern does not have (1 groups)",
        ],
        id="unknown-group",
    ),
    pytest.param(
        "- rewrite: {regex: {pattern: '/a', substitution: '/\\x'}}\n",
        [
            "mesh.yaml:7:26: services.reviews.routes[0].rewrite.regex: '\\' must be followed "
            "by a group number (\\1) or another '\\'",
        ],
        id="stray-backslash",
    ),
    pytest.param(
        "- rewrite: {authority: 'bad host'}\n",
        [
            "mesh.yaml:7:30: services.reviews.routes[0].rewrite.authority: 'bad host' is "
            "neither an IP address nor a DNS name",
        ],
        id="authority-not-a-host",
    ),
    pytest.param(
        "- rewrite: {authority: 'api:99999'}\n",
        [
            "mesh.yaml:7:30: services.reviews.routes[0].rewrite.authority: 'api:99999': the "
            "port must be 1 to 65535",
        ],
        id="authority-port",
    ),
]


def test_authorities_take_a_port_and_ipv6_in_brackets() -> None:
    for authority in ("api", "api.internal:8080", "10.0.0.1:80", "'[::1]:8080'", "'::1'"):
        assert built_route(f"- rewrite: {{authority: {authority}}}\n").host_rewrite
    assert problems(reviews("- rewrite: {authority: '::1:80:x'}\n"))


# --- redirects and direct responses -----------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "envoy_code"),
    [
        (301, rc.RedirectAction.MOVED_PERMANENTLY),
        (302, rc.RedirectAction.FOUND),
        (303, rc.RedirectAction.SEE_OTHER),
        (307, rc.RedirectAction.TEMPORARY_REDIRECT),
        (308, rc.RedirectAction.PERMANENT_REDIRECT),
    ],
)
def test_a_redirect_replaces_forwarding(code: int, envoy_code: int) -> None:
    r = built_route(
        f"""\
        - match: {{path_prefix: /old/}}
          redirect: {{scheme: https, host: new.example, port: 8443, prefix: /new/, code: {code}}}
        """
    )
    assert (r.to, r.timeout_ms, r.retries) == ((), None, None)  # no defaults: nothing is sent
    built = envoy_route(r)
    assert built.WhichOneof("action") == "redirect"
    assert built.redirect.response_code == envoy_code
    assert (built.redirect.scheme_redirect, built.redirect.host_redirect) == (
        "https",
        "new.example",
    )
    assert (built.redirect.port_redirect, built.redirect.prefix_rewrite) == (8443, "/new/")


def test_a_redirect_path_replaces_the_whole_path_and_301_is_the_default() -> None:
    redirect = envoy_route(built_route("- redirect: {path: /moved}\n")).redirect
    assert redirect.path_redirect == "/moved"
    assert redirect.response_code == rc.RedirectAction.MOVED_PERMANENTLY
    assert redirect.WhichOneof("scheme_rewrite_specifier") is None
    assert not (redirect.host_redirect or redirect.port_redirect)


def test_a_direct_response_replaces_forwarding_and_keeps_response_headers() -> None:
    r = built_route(
        """\
        - direct_response: {status: 418, body: "I'm a teapot"}
          headers: {response: {set: {x-answered-by: mesh}}}
        """
    )
    built = envoy_route(r)
    assert built.WhichOneof("action") == "direct_response"
    assert built.direct_response.status == 418
    assert built.direct_response.body.inline_string == "I'm a teapot"
    assert [h.header.key for h in built.response_headers_to_add] == ["x-answered-by"]
    empty = envoy_route(built_route("- direct_response: {status: 204}\n")).direct_response
    assert not empty.HasField("body")


def test_a_route_answered_locally_refers_to_no_cluster() -> None:
    text = reviews("- direct_response: {status: 200}\n- to: [{subset: v2}]\n")
    service = build_ir(parse_mesh(text, "mesh.yaml")).services[0]
    assert translate_service(service).route_targets == {"outbound|9080|v2|reviews"}


LOCAL_ANSWER_PROBLEMS = [
    pytest.param(
        """\
            - to: [{subset: v1}]
              timeout: 1s
              redirect: {host: elsewhere}
            """,
        [
            "mesh.yaml:7:9: services.reviews.routes[0].to: a route with 'redirect' is "
            "answered by the caller's sidecar and forwards nothing, so 'to' would do "
            "nothing; remove it",
            "mesh.yaml:8:9: services.reviews.routes[0].timeout: a route with 'redirect' is "
            "answered by the caller's sidecar and forwards nothing, so 'timeout' would do "
            "nothing; remove it",
        ],
        id="redirect-and-forwarding",
    ),
    pytest.param(
        """\
            - direct_response: {status: 503}
              mirror: {subset: v2}
              retries: {attempts: 1}
              headers: {request: {set: {x-a: b}}}
            """,
        [
            "mesh.yaml:8:9: services.reviews.routes[0].mirror: a route with "
            "'direct_response' is answered by the caller's sidecar and forwards nothing, so "
            "'mirror' would do nothing; remove it",
            "mesh.yaml:9:9: services.reviews.routes[0].retries: a route with "
            "'direct_response' is answered by the caller's sidecar and forwards nothing, so "
            "'retries' would do nothing; remove it",
            "mesh.yaml:10:19: services.reviews.routes[0].headers.request: a route with "
            "'direct_response' is answered by the caller's sidecar and forwards nothing, so "
            "'headers.request' would do nothing; remove it",
        ],
        id="direct-response-and-forwarding",
    ),
    pytest.param(
        "- {redirect: {path: /a}, direct_response: {status: 200}}\n",
        [
            "mesh.yaml:7:32: services.reviews.routes[0].direct_response: give 'redirect' or "
            "'direct_response', not both",
        ],
        id="both",
    ),
    pytest.param(
        "- redirect: {code: 304, path: /a}\n",
        [
            "mesh.yaml:7:26: services.reviews.routes[0].redirect.code: expected one of 301, "
            "302, 303, 307, 308; got integer 304",
        ],
        id="code",
    ),
    pytest.param(
        "- redirect: {scheme: ftp}\n",
        [
            "mesh.yaml:7:28: services.reviews.routes[0].redirect.scheme: expected one of "
            "http, https; got string 'ftp'",
        ],
        id="scheme",
    ),
    pytest.param(
        "- redirect: {code: 302}\n",
        [
            "mesh.yaml:7:19: services.reviews.routes[0].redirect: give 'scheme', 'host', "
            "'port', 'path' or 'prefix': a redirect to the same URL would loop",
        ],
        id="same-url",
    ),
    pytest.param(
        "- redirect: {path: /a, prefix: /b}\n",
        [
            "mesh.yaml:7:19: services.reviews.routes[0].redirect: give one of 'path' or "
            "'prefix': both replace the path",
        ],
        id="path-and-prefix",
    ),
    pytest.param(
        f"- direct_response: {{status: 99, body: {'x' * 4097}}}\n",
        [
            "mesh.yaml:7:35: services.reviews.routes[0].direct_response.status: must be 200 "
            "or more, got integer 99",
        ],
        id="status",
    ),
    pytest.param(
        f"- direct_response: {{status: 200, body: {'é' * 2049}}}\n",
        [
            "mesh.yaml:7:26: services.reviews.routes[0].direct_response: the body is 4098 "
            "bytes; Envoy sends at most 4096",
        ],
        id="body-size",
    ),
]


def test_a_tcp_service_has_no_redirect() -> None:
    text = "mesh: m\nservices:\n  db:\n    port: 5432\n    protocol: tcp\n"
    text += "    routes:\n      - direct_response: {status: 200}\n"
    assert problems(text) == [
        "mesh.yaml:7:9: services.db.routes[0].direct_response: 'direct_response' applies to "
        "HTTP, not tcp",
    ]


# --- case-insensitive matching ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "expected"),
    [
        ("{path_prefix: /api/v1, ignore_case: true}", ("prefix", "/api/v1", False)),
        ("{path: /api/v1, ignore_case: true}", ("path", "/api/v1", False)),
        ("{path_regex: '/api/v[0-9]', ignore_case: true}", ("safe_regex", "(?i)/api/v[0-9]", None)),
        ("{path_prefix: /api/v1}", ("prefix", "/api/v1", None)),
    ],
)
def test_ignore_case_makes_the_path_rule_case_insensitive(
    match: str, expected: tuple[str, str, bool | None]
) -> None:
    built = envoy_route(built_route(f"- match: {match}\n")).match
    rule = built.WhichOneof("path_specifier")
    value = built.safe_regex.regex if rule == "safe_regex" else getattr(built, rule)
    sensitive = built.case_sensitive.value if built.HasField("case_sensitive") else None
    assert (rule, value, sensitive) == expected


def test_ignore_case_in_a_header_or_query_rule() -> None:
    r = built_route(
        """\
        - match:
            headers:
              x-user: {exact: Tester, ignore_case: true}
              x-team: {regex: "qa-[a-z]+", ignore_case: true}
            query: {lang: {prefix: EN, ignore_case: true}}
        """
    )
    built = envoy_route(r).match
    headers = {h.name: h.string_match for h in built.headers}
    assert (headers["x-user"].exact, headers["x-user"].ignore_case) == ("Tester", True)
    assert headers["x-team"].safe_regex.regex == "(?i)qa-[a-z]+"
    query = built.query_parameters[0].string_match
    assert (query.prefix, query.ignore_case) == ("EN", True)


IGNORE_CASE_PROBLEMS = [
    pytest.param(
        "- match: {methods: [GET], ignore_case: true}\n",
        [
            "mesh.yaml:7:16: services.reviews.routes[0].match: 'ignore_case' applies to "
            "'path', 'path_prefix' or 'path_regex': give one (for headers and query, put "
            "'ignore_case' in the value's rule)",
        ],
        id="no-path-rule",
    ),
    pytest.param(
        "- match: {headers: {x-a: {present: true, ignore_case: true}}}\n",
        [
            "mesh.yaml:7:32: services.reviews.routes[0].match.headers.x-a: 'ignore_case' "
            "applies to 'exact', 'prefix' and 'regex', not 'present'",
        ],
        id="present",
    ),
    pytest.param(
        "- match: {path: /a, ignore_case: 'true'}\n",
        [
            "mesh.yaml:7:40: services.reviews.routes[0].match.ignore_case: expected true or "
            "false, got string 'true'",
        ],
        id="not-a-bool",
    ),
]


@pytest.mark.parametrize(
    ("rule", "value", "expected"),
    [
        (ir.ValueMatch("x", "exact", "Tester", True), "tESTER", True),
        (ir.ValueMatch("x", "exact", "Tester"), "tESTER", False),
        (ir.ValueMatch("x", "prefix", "QA-", True), "qa-team", True),
        (ir.ValueMatch("x", "regex", "qa-[a-z]+", True), "QA-TEAM", True),
        (ir.ValueMatch("x", "regex", "qa-[a-z]+"), "QA-TEAM", False),
        (ir.ValueMatch("x", "exact", "straße", True), "STRASSE", False),  # ASCII only, as Envoy
    ],
)
def test_the_mixer_ignores_case_as_envoy_does(
    rule: ir.ValueMatch, value: str, expected: bool
) -> None:
    assert value_matches(rule, value) is expected


def test_a_custom_policy_ignores_the_case_of_a_header_in_envoy_and_in_the_mixer() -> None:
    rule = ir.ValueMatch("x-user", "exact", "Tester", True)
    policy = ir.Policy("p", "reviews", "custom", target=ir.PolicyTarget(headers=(rule,)))
    predicate = policy_predicate(policy)
    assert predicate is not None
    assert predicate.single_predicate.value_match.safe_regex.regex == "(?i)Tester"
    assert policy_matches(policy, None, "GET", "/", {"x-user": "TESTER"})


@pytest.mark.parametrize(
    ("routes", "expected"), REWRITE_PROBLEMS + LOCAL_ANSWER_PROBLEMS + IGNORE_CASE_PROBLEMS
)
def test_problems_are_placed(routes: str, expected: list[str]) -> None:
    assert problems(reviews(routes)) == expected
