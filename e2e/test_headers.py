"""Header edits and prefix rewrites in a real Envoy, as the app and the caller see them.

The app echoes the headers and path it received; response edits are read off the caller's
answer (with every value of a repeated header, so that `add` is told apart from `set`).
"""

from __future__ import annotations

import http.client

from harness.mesh import Instance, MeshEnv
from meshes import reviews_mesh, start_reviews_mesh

HEADER_ROUTES = """
              - name: edited
                match: {path_prefix: /edited}
                to: [{subset: v1}]
                headers:
                  request:
                    add: {x-added: mesh, X-Multi: mesh}
                    set: {x-set: mesh}
                    remove: [X-Secret]
                  response:
                    add: {x-served-by: meshpilot, x-app-service: mesh}
                    set: {x-app-version: hidden}
                    remove: [x-app-ip]
              - name: api
                match: {path_prefix: /api/}
                to: [{subset: v1}]
                rewrite: {prefix: /v1/}
              - name: legacy
                match: {path_prefix: /legacy/}
                rewrite: {prefix: /}"""


def response_headers(caller: Instance, path: str) -> http.client.HTTPMessage:
    """Every response header line, repeated names included, of one request from `caller`."""
    conn = http.client.HTTPConnection(caller.ip, 15001, timeout=5)
    try:
        conn.request("GET", path, headers={"host": "reviews"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        return response.msg
    finally:
        conn.close()


def test_request_headers_are_added_set_and_removed_before_the_app_sees_them(
    mesh_env: MeshEnv,
) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, HEADER_ROUTES))
    sent = {"x-multi": "client", "x-set": "client", "x-secret": "s3cret", "x-keep": "kept"}
    with page.client() as client:
        reply = client.request("reviews", "/edited", headers=sent)
        untouched = client.request("reviews", "/other", headers=sent)
    assert reply.status == 200
    received = reply.json()["headers"]
    assert received["x-added"] == "mesh"
    assert received["x-multi"] == "client, mesh"  # `add` appends a value
    assert received["x-set"] == "mesh"  # `set` replaces it
    assert "x-secret" not in received
    assert received["x-keep"] == "kept"
    other = untouched.json()["headers"]
    assert (other["x-set"], other["x-secret"], "x-added" in other) == ("client", "s3cret", False)


def test_response_headers_are_added_set_and_removed_before_the_caller_sees_them(
    mesh_env: MeshEnv,
) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, HEADER_ROUTES))
    edited = response_headers(page, "/edited")
    untouched = response_headers(page, "/other")
    assert edited.get_all("x-served-by") == ["meshpilot"]
    assert edited.get_all("x-app-service") == ["reviews", "mesh"]  # `add` keeps the app's value
    assert edited.get_all("x-app-version") == ["hidden"]  # `set` replaces it
    assert edited.get_all("x-app-ip") is None
    assert untouched.get_all("x-app-ip") == [v1.ip]
    assert untouched.get_all("x-served-by") is None


def test_a_prefix_rewrite_changes_the_path_the_app_sees(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, HEADER_ROUTES))
    with page.client() as client:
        api = client.get("reviews", "/api/items/7?sort=new")
        legacy = client.get("reviews", "/legacy/old/page")
        other = client.get("reviews", "/apiary")
    assert (api.status, api.json()["path"]) == (200, "/v1/items/7?sort=new")
    assert (legacy.status, legacy.json()["path"]) == (200, "/old/page")
    assert (other.status, other.json()["path"]) == (200, "/apiary")
