"""Host (authority) and regex path rewrites in a real Envoy, as the app sees them: the app
echoes the Host header and path it received."""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import reviews_mesh, start_reviews_mesh

REWRITE_ROUTES = r"""
              - name: users
                match: {path_regex: "/users/[0-9]+/.*"}
                to: [{subset: v1}]
                rewrite:
                  authority: users.internal:8080
                  regex: {pattern: "^/users/([0-9]+)/(.*)$", substitution: "/v2/\\2/of/\\1"}
              - name: renamed-host
                match: {path_prefix: /host/}
                to: [{subset: v1}]
                rewrite: {authority: reviews.example}"""


def test_the_app_sees_the_rewritten_host_and_path(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, REWRITE_ROUTES))
    with page.client() as client:
        both = client.get("reviews", "/users/42/reviews?sort=new")
        host_only = client.get("reviews", "/host/page")
        neither = client.get("reviews", "/users/me/reviews")
    assert both.status == 200, both.text
    assert both.json()["headers"]["host"] == "users.internal:8080"
    assert both.json()["path"] == "/v2/reviews/of/42?sort=new"  # the query string is kept
    assert host_only.status == 200, host_only.text
    assert (host_only.json()["headers"]["host"], host_only.json()["path"]) == (
        "reviews.example",
        "/host/page",
    )
    assert neither.status == 200, neither.text
    assert (neither.json()["headers"]["host"], neither.json()["path"]) == (
        "reviews",
        "/users/me/reviews",
    )
