"""Per-request `x-envoy-max-retries` and `x-envoy-upstream-rq-timeout-ms`: obeyed when the app
sends them to its own sidecar, stripped when they come from outside the mesh.

Outside the mesh here is: a client reaching a sidecar's outbound port from an address that is
not the app's (another host; here another loopback address), and anyone reaching an inbound
port directly. Each case is checked against a slow or failing app, so that a header that was
not stripped would show (a quick 504, or the extra tries it asked for).
"""

from __future__ import annotations

import uuid

from harness.client import MeshClient
from harness.mesh import Instance, MeshEnv
from meshes import reviews_mesh, reviews_with, start_reviews_mesh

SHORT = {"x-envoy-upstream-rq-timeout-ms": "100"}
SLOW = "/delay/1000"  # well past the 100 ms asked for, well within the 15 s route timeout
SLACK = 0.6  # seconds a loaded machine may add to a timeout
EARLY = 0.01  # Envoy arms timers from its event loop's last clock reading: up to a few ms early
# Permissive: the inbound port takes plaintext from outside the mesh too, headers and all.
MESH = reviews_with(
    """
    security: {mtls: permissive}
    subsets: {v1: {version: v1}, v2: {version: v2}}
    """
)


def outsider(env: MeshEnv, instance: Instance, port: int = 15001) -> MeshClient:
    """A client of `instance`'s port connecting from an address of no instance of the mesh."""
    return MeshClient(instance.ip, port, timeout=10.0, source_ip=env.ips.ip())


def failing(times: int) -> dict[str, str]:
    """Headers that make the app answer 503 to the first `times` requests carrying them."""
    return {"x-fail-times": str(times), "x-fail-key": uuid.uuid4().hex}


def test_the_apps_timeout_header_is_obeyed_and_an_outsiders_is_not(mesh_env: MeshEnv) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, MESH)
    with page.client() as app:
        short = app.request("reviews", SLOW, headers=SHORT)
    with outsider(mesh_env, page) as client:
        from_outside = client.request("reviews", SLOW, headers=SHORT)
    with outsider(mesh_env, v1, 15006) as client:
        at_inbound = client.request("reviews", SLOW, headers=SHORT)
    print(f"app: {short.status} in {short.elapsed:.3f} s; outsider: {from_outside.elapsed:.3f} s")
    assert short.status == 504, short.text
    assert 0.1 - EARLY <= short.elapsed < 0.1 + SLACK, short.elapsed
    assert from_outside.status == 200, from_outside.text
    assert from_outside.elapsed >= 1.0
    assert at_inbound.status == 200, at_inbound.text
    assert at_inbound.elapsed >= 1.0


def test_the_apps_max_retries_header_is_obeyed_and_an_outsiders_is_not(
    mesh_env: MeshEnv,
) -> None:
    """Four 503s: the default policy's two retries are not enough, the four the app asks for
    are; an outsider asking for four still gets two. All to v1: failures count per instance."""
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0))
    more = {"x-envoy-max-retries": "4"}
    with page.client() as app:
        obeyed = app.request("reviews", headers={**more, **failing(4)})
        none = app.request("reviews", headers={"x-envoy-max-retries": "0", **failing(1)})
    with outsider(mesh_env, page) as client:
        ignored = client.request("reviews", headers={**more, **failing(4)})
    assert obeyed.status == 200, obeyed.text
    assert none.status == 503  # 0 retries asked for: the one 503 comes back
    assert ignored.status == 503, ignored.text
    assert "x-envoy-max-retries" not in ignored.json()["headers"]
