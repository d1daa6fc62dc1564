"""CORS in a real Envoy: the caller's sidecar answers a preflight from an allowed origin itself
(the app never sees it), lets one from any other origin through untouched (no access-control
answer), and marks actual cross-origin answers for allowed origins only; a service-wide policy
does the same at the ingress gateway, where browsers come in."""

from __future__ import annotations

from harness.client import MeshClient
from harness.mesh import Instance, MeshEnv
from harness.wait import HttpReply, http_json
from meshes import reviews_with, seen, start_called

GATEWAY_PORT = 8000

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


def seen_at_all(instance: Instance) -> int:
    """Requests the instance's app has received so far, whatever their Host."""
    hosts: dict[str, int] = http_json(f"{instance.app_url}/__seen")["hosts"]
    return sum(hosts.values())


def gateway_mesh(listen: str) -> str:
    """reviews with a service-wide policy, entered through the gateway `ingress`."""
    return f"""
mesh: e2e
services:
  reviews:
    port: 9080
    cors: {{allow_origins: [https://shop.example], allow_methods: [PUT]}}
gateways:
  ingress:
    listen: {listen}
    hosts:
      shop.example: reviews
"""


def test_the_gateway_answers_preflights_by_the_services_policy(mesh_env: MeshEnv) -> None:
    gateway_ip = mesh_env.ips.ip()
    mesh_env.start_control_plane(mesh_env.write_mesh(gateway_mesh(f"{gateway_ip}:8000")))
    reviews = mesh_env.start_instance("reviews", "v1")
    gateway = mesh_env.start_gateway("ingress", gateway_ip)
    gateway.wait_hosts("outbound|9080||reviews", [reviews.inbound])
    before = seen_at_all(reviews)  # the harness's own readiness probe
    with MeshClient(gateway_ip, GATEWAY_PORT) as client:
        allowed = client.request(
            "shop.example", "/", method="OPTIONS", headers=preflight("https://shop.example")
        )
        answered_by_gateway = seen_at_all(reviews)
        actual = client.get("shop.example", "/", origin="https://shop.example")
        after_actual = seen_at_all(reviews)
    assert allowed.status == 200
    assert access_control(allowed) == {
        "access-control-allow-origin": "https://shop.example",
        "access-control-allow-methods": "PUT",
    }
    assert (answered_by_gateway, after_actual) == (before, before + 1)
    assert actual.status == 200
    assert access_control(actual) == {"access-control-allow-origin": "https://shop.example"}
