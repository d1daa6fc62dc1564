"""Redirects in a real Envoy: the caller's sidecar answers with the status and Location itself
(the client does not follow), and the app never sees those requests."""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import reviews_mesh, seen, start_reviews_mesh

REDIRECT_ROUTES = """
              - name: old-site
                match: {path_prefix: /old/}
                redirect:
                  {scheme: https, host: new.example.com, port: 8443, prefix: /new/, code: 308}
              - name: moved
                match: {path: /moved}
                redirect: {path: /here}
              - name: see-other
                match: {path_prefix: /submit}
                redirect: {host: results, code: 303}"""


def test_a_redirect_answers_with_its_code_and_location(mesh_env: MeshEnv) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, REDIRECT_ROUTES))
    with page.client() as client:
        old = client.get("reviews", "/old/page?x=1")
        moved = client.get("reviews", "/moved")
        submitted = client.request("reviews", "/submit", method="POST", body="a=1")
        assert seen(v1) == 0
        forwarded = client.get("reviews", "/elsewhere")
    assert (old.status, old.headers["location"]) == (
        308,
        "https://new.example.com:8443/new/page?x=1",
    )
    assert (moved.status, moved.headers["location"]) == (301, "http://reviews/here")
    assert (submitted.status, submitted.headers["location"]) == (303, "http://results/submit")
    assert forwarded.status == 200  # the app is there: only the redirected requests missed it
    assert seen(v1) == 1
