"""`idle_timeout`: the caller's sidecar closes a connection to an instance that has carried no
request for that long, and keeps the connections of a service without one open."""

from __future__ import annotations

import time

from harness.mesh import MeshEnv
from harness.wait import wait_for
from meshes import caller_mesh, start_called

IDLE = 0.5  # seconds
REVIEWS, RATINGS = "cluster.outbound|9080||reviews", "cluster.outbound|9080||ratings"
MESH = caller_mesh(
    f"reviews:\n  port: 9080\n  idle_timeout: {int(IDLE * 1000)}ms\nratings:\n  port: 9080"
)
EARLY = 0.05  # the timer starts as the answer leaves Envoy, a little before it reaches us


def test_an_idle_connection_is_closed_after_the_idle_timeout(mesh_env: MeshEnv) -> None:
    page, _ = start_called(mesh_env, MESH, ["reviews", "ratings"])
    with page.client() as client:
        assert client.get("ratings").status == 200
        assert client.get("reviews").status == 200
    answered = time.monotonic()
    wait_for(
        lambda: page.admin.stat(f"{REVIEWS}.upstream_cx_idle_timeout") == 1,
        IDLE + 5,
        message="the idle connection to reviews to be closed",
    )
    closed_after = time.monotonic() - answered
    print(f"idle timeout {IDLE} s: closed after {closed_after:.3f} s")
    assert closed_after >= IDLE - EARLY
    assert page.admin.stat(f"{REVIEWS}.upstream_cx_active") == 0
    assert page.admin.stat(f"{REVIEWS}.upstream_cx_destroy") == 1
    # ratings has Envoy's default (1 h): its connection, idle for as long, is still open.
    assert page.admin.stat(f"{RATINGS}.upstream_cx_active") == 1
    with page.client() as client:  # the next request simply opens a new connection
        assert client.get("reviews").status == 200
    assert page.admin.stat(f"{REVIEWS}.upstream_cx_total") == 2
