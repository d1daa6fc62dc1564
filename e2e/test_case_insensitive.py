"""Case-insensitive matching in a real Envoy: `match.ignore_case` for the path rule and
`ignore_case` in header and query rules. Every route below sends what it matches to v2; the
last route sends the rest to v1, so the answering version says whether a route matched."""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import reviews_mesh, start_reviews_mesh, version

CASE_ROUTES = """
              - name: api-any-case
                match: {path_prefix: /api/v1, ignore_case: true}
                to: [{subset: v2}]
              - name: strict-case
                match: {path_prefix: /strict/v1}
                to: [{subset: v2}]
              - name: exact-any-case
                match: {path: /health, ignore_case: true}
                to: [{subset: v2}]
              - name: regex-any-case
                match: {path_regex: "/items/[a-z]+", ignore_case: true}
                to: [{subset: v2}]
              - name: header-any-case
                match: {path_prefix: /by-header, headers: {x-team: {exact: qa, ignore_case: true}}}
                to: [{subset: v2}]
              - name: query-any-case
                match: {path_prefix: /by-query, query: {lang: {prefix: en, ignore_case: true}}}
                to: [{subset: v2}]"""


def test_api_v1_in_any_case_matches_only_where_the_rule_ignores_case(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, CASE_ROUTES))
    with page.client() as c:
        assert version(c, "/API/V1/items") == "v2"
        assert version(c, "/api/v1/items") == "v2"
        assert version(c, "/STRICT/V1/items") == "v1"
        assert version(c, "/strict/v1/items") == "v2"
        assert version(c, "/HEALTH") == "v2"
        assert version(c, "/HEALTH/more") == "v1"
        assert version(c, "/ITEMS/ABC") == "v2"
        assert version(c, "/ITEMS/42") == "v1"


def test_header_and_query_rules_that_ignore_case(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, CASE_ROUTES))
    with page.client() as c:
        assert version(c, "/by-header", **{"x-team": "QA"}) == "v2"
        assert version(c, "/by-header", **{"x-team": "qa"}) == "v2"
        assert version(c, "/by-header", **{"x-team": "qa-2"}) == "v1"
        assert version(c, "/by-query?lang=EN-gb") == "v2"
        assert version(c, "/by-query?lang=de") == "v1"
