"""The 503 overflow of a circuit breaker: requests over a service's limits fail at once."""

from __future__ import annotations

import threading

from harness.client import MeshClient
from harness.mesh import Instance, MeshEnv
from harness.wait import HttpReply, wait_for
from meshes import caller_mesh, start_called

CLUSTER = "outbound|9080||reviews"
SLOW = "/delay/500"
BURST = 8
LIMITS = "circuit_breaker: {max_connections: 1, max_pending_requests: 1, max_requests: 1}"


def breaker_mesh(limits: str = LIMITS) -> str:
    """reviews with tight limits and ratings, the same app without limits, for comparison."""
    return caller_mesh(f"ratings:\n  port: 9080\nreviews:\n  port: 9080\n  {limits}")


def start_breaker_mesh(env: MeshEnv, mesh: str) -> Instance:
    """The caller, once its sidecar has reviews and ratings as members of their clusters."""
    return start_called(env, mesh, ["reviews", "ratings"])[0]


def burst(caller: Instance, host: str, count: int, path: str) -> list[HttpReply]:
    """`count` requests sent at the same moment, each on its own connection."""
    replies: list[HttpReply | BaseException] = [RuntimeError("no reply")] * count
    start = threading.Barrier(count)

    def send(i: int) -> None:
        with MeshClient(caller.ip, timeout=10.0) as client:
            start.wait()
            try:
                replies[i] = client.get(host, path)
            except Exception as err:  # reported below with the others
                replies[i] = err

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    errors = [r for r in replies if not isinstance(r, HttpReply)]
    assert not errors, errors
    return [r for r in replies if isinstance(r, HttpReply)]


def test_requests_over_the_limits_get_503_overflow_at_once(mesh_env: MeshEnv) -> None:
    page = start_breaker_mesh(mesh_env, breaker_mesh())

    replies = burst(page, "reviews", BURST, SLOW)

    served = [r for r in replies if r.status == 200]
    overflowed = [r for r in replies if r.status == 503]
    assert len(served) + len(overflowed) == BURST, [r.status for r in replies]
    assert 1 <= len(served) <= 2  # one request in flight plus at most one pending
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflowed)
    assert all(r.elapsed < 0.5 for r in overflowed), "an overflow must not wait for the app"
    assert page.admin.stat(f"cluster.{CLUSTER}.upstream_rq_pending_overflow") == len(overflowed)
    # The same burst to the same app without limits is served whole: the 503s were the breaker.
    assert [r.status for r in burst(page, "ratings", BURST, SLOW)] == [200] * BURST


def test_a_changed_limit_applies_within_seconds(mesh_env: MeshEnv) -> None:
    page = start_breaker_mesh(mesh_env, breaker_mesh())
    control_plane = mesh_env.control_plane
    assert control_plane is not None
    mesh_env.write_mesh(breaker_mesh(""))  # the same file: a live edit
    wait_for(
        lambda: "circuit_breakers" not in page.admin.dynamic_clusters()[CLUSTER],
        5,
        message="the circuit breaker to be removed",
    )
    control_plane.wait_synced([page.node_id], timeout=2)
    assert [r.status for r in burst(page, "reviews", BURST, SLOW)] == [200] * BURST
