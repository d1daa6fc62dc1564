"""CORS in a real Envoy: the caller's sidecar answers a preflight from an allowed origin itself
(the app never sees it), lets one from any other origin through untouched (no access-control
answer), and marks actual cross-origin answers for allowed origins only."""

from __future__ import annotations

from harness.mesh import MeshEnv
from harness.wait import HttpReply
from meshes import reviews_with, seen, start_called

MESH = reviews_with(
    """
    routes:
      - name: web
        cors:
          allow_origins: [https://shop.example, {prefix: "https://beta."}]
          allow_methods: [GET, POST]
          allow_headers: [x-user]
          expose_headers: [x-version]
          max_age: 1h
          allow_credentials: true
    """
)
ALLOWED_PREFLIGHT = {
    "access-control-allow-origin": "https://shop.example",
    "access-control-allow-methods": "GET,POST",
    "access-control-allow-headers": "x-user",
    "access-control-max-age": "3600",
    "access-control-allow-credentials": "true",
    "access-control-expose-headers": "x-version",
}


def access_control(reply: HttpReply) -> dict[str, str]:
    return {k: v for k, v in reply.headers.items() if k.startswith("access-control-")}


def preflight(origin: str) -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": "POST"}


def test_a_preflight_from_an_allowed_origin_is_answered_by_the_callers_sidecar(
    mesh_env: MeshEnv,
) -> None:
    page, (reviews,) = start_called(mesh_env, MESH, ["reviews"])
    with page.client() as client:
        allowed = client.request(
            "reviews", "/", method="OPTIONS", headers=preflight("https://shop.example")
        )
        by_prefix = client.request(
            "reviews", "/", method="OPTIONS", headers=preflight("https://beta.shop.example")
        )
        answered_by_sidecar = seen(reviews)
        refused = client.request(
            "reviews", "/", method="OPTIONS", headers=preflight("https://evil.example")
        )
    assert allowed.status == 200
    assert access_control(allowed) == ALLOWED_PREFLIGHT
    assert access_control(by_prefix)["access-control-allow-origin"] == "https://beta.shop.example"
    assert answered_by_sidecar == 0
    assert access_control(refused) == {}  # forwarded to the app, which knows no CORS
    assert seen(reviews) == 1


def test_an_actual_cross_origin_request_gets_access_control_allow_origin(
    mesh_env: MeshEnv,
) -> None:
    page, _ = start_called(mesh_env, MESH, ["reviews"])
    with page.client() as client:
        allowed = client.get("reviews", "/", origin="https://shop.example")
        refused = client.get("reviews", "/", origin="https://evil.example")
    assert (allowed.status, refused.status) == (200, 200)
    assert access_control(allowed) == {
        "access-control-allow-origin": "https://shop.example",
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "x-version",
    }
    assert access_control(refused) == {}
