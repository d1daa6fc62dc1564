"""Route matching in a real Envoy: path regex, header and query rules, methods, file order.

Every route below sends what it matches to v2; anything else falls through to the last route
(all to v1), so the answering version says whether a route matched.
"""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import reviews_mesh, start_reviews_mesh, version

MATCH_ROUTES = """
              - name: item-by-id
                match: {path_regex: "/items/[0-9]+"}
                to: [{subset: v2}]
              - name: testers
                match: {path_prefix: /by-header-regex, headers: {X-User: {regex: "tester-[a-z]+"}}}
                to: [{subset: v2}]
              - name: canaries
                match: {path_prefix: /by-header-present, headers: {x-canary: {present: true}}}
                to: [{subset: v2}]
              - name: unpinned
                match: {path_prefix: /by-header-absent, headers: {x-pin: {present: false}}}
                to: [{subset: v2}]
              - name: variant-b
                match: {path_prefix: /by-query-exact, query: {variant: b}}
                to: [{subset: v2}]
              - name: debugging
                match: {path_prefix: /by-query-present, query: {debug: {present: true}}}
                to: [{subset: v2}]
              - name: writes
                match: {path_prefix: /by-method, methods: [PUT, DELETE]}
                to: [{subset: v2}]"""

ORDER_ROUTES = """
              - name: broad-first
                match: {path_prefix: /broad}
                to: [{subset: v2}]
              - name: narrow-after-broad
                match: {path_prefix: /broad/special}
                to: [{subset: v1}]
              - name: narrow-first
                match: {path_prefix: /narrow/special}
                to: [{subset: v2}]
              - name: broad-after-narrow
                match: {path_prefix: /narrow}
                to: [{subset: v1}]
              - name: whole-service
                match: {path_prefix: /everyone}"""


def test_path_regex_header_and_query_rules_and_methods(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, MATCH_ROUTES))
    with page.client() as c:
        # path_regex matches the whole path (the query string is not part of it)
        assert version(c, "/items/42") == "v2"
        assert version(c, "/items/42?sort=new") == "v2"
        assert version(c, "/items/42/reviews") == "v1"
        assert version(c, "/items/abc") == "v1"
        # a header regex also matches the whole value; header names ignore case
        assert version(c, "/by-header-regex", **{"x-user": "tester-anna"}) == "v2"
        assert version(c, "/by-header-regex", **{"X-USER": "tester-anna"}) == "v2"
        assert version(c, "/by-header-regex", **{"x-user": "tester-42"}) == "v1"
        assert version(c, "/by-header-regex", **{"x-user": "a-tester-anna"}) == "v1"
        assert version(c, "/by-header-regex") == "v1"
        assert version(c, "/by-header-present", **{"x-canary": "anything"}) == "v2"
        assert version(c, "/by-header-present") == "v1"
        assert version(c, "/by-header-absent") == "v2"
        assert version(c, "/by-header-absent", **{"x-pin": "v1"}) == "v1"
        assert version(c, "/by-query-exact?variant=b") == "v2"
        assert version(c, "/by-query-exact?x=1&variant=b") == "v2"
        assert version(c, "/by-query-exact?variant=bb") == "v1"
        assert version(c, "/by-query-exact") == "v1"
        assert version(c, "/by-query-present?debug") == "v2"
        assert version(c, "/by-query-present?debug=1") == "v2"
        assert version(c, "/by-query-present?verbose=1") == "v1"
        assert version(c, "/by-method", "PUT") == "v2"
        assert version(c, "/by-method", "DELETE") == "v2"
        assert version(c, "/by-method", "GET") == "v1"
        assert version(c, "/by-method", "POST") == "v1"


def test_the_first_matching_route_wins_and_a_route_without_to_uses_the_whole_service(
    mesh_env: MeshEnv,
) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, ORDER_ROUTES))
    with page.client() as c:
        # file order decides, not which rule is more specific
        assert version(c, "/broad/special") == "v2"
        assert version(c, "/narrow/special") == "v2"
        assert version(c, "/narrow/other") == "v1"
        everyone = {version(c, "/everyone") for _ in range(20)}
    assert everyone == {"v1", "v2"}  # round robin over both instances of the service
