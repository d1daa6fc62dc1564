"""The control plane can die and come back without the mesh noticing: sidecars keep serving
with what they have, reconnect, and are not sent anything they already have."""

from __future__ import annotations

import re
import socket
import time

from harness.client import LoadGenerator, Result
from harness.mesh import ControlPlane, MeshEnv
from harness.wait import wait_for
from meshes import reviews_mesh, start_reviews_mesh

RESYNC_DEADLINE = 10.0  # every proxy SYNCED again within 10 s of the restart
DOWN_REQUESTS = 100  # requests that must succeed while the control plane is down
SHUTDOWN_DEADLINE = 5.0


def acked_versions(control_plane: ControlPlane) -> dict[str, dict[str, str | None]]:
    """node id -> type URL -> the version that proxy ACKed."""
    return {
        proxy["node_id"]: {t: s["acked_version"] for t, s in proxy["types"].items()}
        for proxy in control_plane.proxies()
    }


def pushes_total(control_plane: ControlPlane) -> float:
    """Discovery responses this control plane process has sent, all types together."""
    lines = re.findall(r"^meshpilot_pushes_total\{.*\} (\S+)$", control_plane.metrics(), re.M)
    return sum(float(value) for value in lines)


def refused(ip: str, port: int) -> bool:
    """True when nothing listens on ip:port any more."""
    try:
        with socket.create_connection((ip, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def describe(failures: list[Result], zero: float) -> str:
    return "; ".join(
        f"t={r.sent_at - zero:+.3f}s {r.error or r.status} {r.body!r:.80}" for r in failures[:10]
    )


def test_the_control_plane_is_killed_and_restarted_under_load_with_zero_failed_requests(
    mesh_env: MeshEnv,
) -> None:
    page, v1, v2 = start_reviews_mesh(mesh_env, reviews_mesh(75, 25))
    first = mesh_env.control_plane
    assert first is not None
    nodes = [page.node_id, v1.node_id, v2.node_id]
    first.wait_synced(nodes)
    before = acked_versions(first)
    assert sorted(before) == sorted(nodes)
    assert all(v for types in before.values() for v in types.values()), before

    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(50)
        killed_at = time.monotonic()
        assert mesh_env.processes.kill(first.proc) == -9
        assert refused(first.ip, first.xds_port)
        wait_for(  # the sidecars serve on without a control plane
            lambda: len(load.since(killed_at)) >= DOWN_REQUESTS,
            10,
            message=f"{DOWN_REQUESTS} requests sent with the control plane down",
        )
        restarted_at = time.monotonic()
        second = mesh_env.start_control_plane(first.mesh_path, ip=first.ip)
        second.wait_synced(nodes, timeout=RESYNC_DEADLINE - (time.monotonic() - restarted_at))
        resynced_in = time.monotonic() - restarted_at
        load.wait_for_results(50)

    failures = load.failures()
    assert failures == [], (
        f"{len(failures)} failed requests (times relative to the kill): "
        f"{describe(failures, killed_at)}; all: {load.summary()}"
    )
    while_down = [r for r in load.results if killed_at <= r.sent_at < restarted_at]
    assert len(while_down) >= DOWN_REQUESTS, load.summary()
    served = {r.body["version"] for r in load.since(restarted_at)}
    assert served == {"v1", "v2"}, served
    print(f"all proxies SYNCED {resynced_in:.2f} s after the restart began")

    # Versions are content hashes: the same file gives the same versions, so the proxies were
    # left with what they had, and the new process had nothing to send them.
    assert acked_versions(second) == before
    assert pushes_total(second) == 0, second.metrics()


def test_sigterm_stops_the_control_plane_gracefully(mesh_env: MeshEnv) -> None:
    control_plane = mesh_env.start_control_plane(mesh_env.write_mesh(reviews_mesh(100, 0)))
    reviews = mesh_env.start_instance("reviews", "v1")
    control_plane.wait_synced([reviews.node_id])  # an open ADS stream to end

    started = time.monotonic()
    status = mesh_env.processes.terminate(control_plane.proc, timeout=SHUTDOWN_DEADLINE)
    took = time.monotonic() - started

    assert status == 0, f"exit status {status} after {took:.2f} s\n{control_plane.proc.tail()}"
    print(f"control plane exited 0 {took:.2f} s after SIGTERM")
    for port in (control_plane.xds_port, control_plane.admin_port):
        assert refused(control_plane.ip, port), f"{control_plane.ip}:{port} still accepts"
    # The sidecar outlives its control plane.
    assert reviews.sidecar.alive()
    assert reviews.admin.state() == "LIVE"
