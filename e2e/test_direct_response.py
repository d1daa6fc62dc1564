"""Direct responses in a real Envoy: the caller's sidecar answers with the status and body, the
route's response header edits included, and the app never sees those requests."""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import reviews_mesh, seen, start_reviews_mesh

DIRECT_ROUTES = """
              - name: teapot
                match: {path: /teapot}
                direct_response: {status: 418, body: "I'm a teapot"}
                headers: {response: {set: {x-answered-by: mesh}}}
              - name: maintenance
                match: {path_prefix: /maintenance}
                direct_response: {status: 503}"""


def test_the_callers_sidecar_answers_and_the_app_sees_nothing(mesh_env: MeshEnv) -> None:
    page, v1, v2 = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, DIRECT_ROUTES))
    with page.client() as client:
        teapot = client.get("reviews", "/teapot")
        down = client.get("reviews", "/maintenance/page")
        assert (seen(v1), seen(v2)) == (0, 0)
        forwarded = client.get("reviews", "/elsewhere")
    assert (teapot.status, teapot.text) == (418, "I'm a teapot")
    assert teapot.headers["x-answered-by"] == "mesh"
    assert (down.status, down.text) == (503, "")  # not retried: there is no upstream to retry
    assert forwarded.status == 200
    assert (seen(v1), seen(v2)) == (1, 0)
