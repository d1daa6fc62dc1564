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


# Istio's circuit-breaking task: its DestinationRule's connection pool, then fortio with two
# concurrent connections (`-c 2 -n 20`) gets some 503s. Here with more requests, so that a run
# without a single overflow would be a surprise rather than luck.
ISTIO_TASK = (
    "circuit_breaker: {max_connections: 1, max_pending_requests: 1, max_requests_per_connection: 1}"
)
CLIENTS, EACH = 2, 40


def two_keepalive_clients(caller: Instance, host: str) -> list[HttpReply]:
    """CLIENTS clients, each on its own keep-alive connection, sending EACH requests in a row,
    all at the same time (fortio's `-c 2`)."""
    replies: list[list[HttpReply]] = [[] for _ in range(CLIENTS)]
    errors: list[BaseException] = []
    start = threading.Barrier(CLIENTS)

    def run(i: int) -> None:
        with MeshClient(caller.ip, timeout=10.0) as client:
            start.wait()
            try:
                replies[i] = [client.get(host, "/") for _ in range(EACH)]
            except Exception as err:  # reported below
                errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return [reply for client in replies for reply in client]


def test_istios_circuit_breaking_task_gets_some_503s(mesh_env: MeshEnv) -> None:
    """reviews has the task's settings; ratings the same but for `max_requests_per_connection`,
    under which the two clients, once its one connection is up, never have more than one
    request in flight and one pending."""
    mesh = caller_mesh(
        "ratings:\n  port: 9080\n  circuit_breaker: {max_connections: 1, max_pending_requests: 1}"
        f"\nreviews:\n  port: 9080\n  {ISTIO_TASK}"
    )
    page = start_breaker_mesh(mesh_env, mesh)
    replies = two_keepalive_clients(page, "reviews")
    statuses = [r.status for r in replies]
    overflowed = [r for r in replies if r.status == 503]
    print(f"Istio's task: {statuses.count(200)} x 200, {len(overflowed)} x 503")
    assert statuses.count(200) + len(overflowed) == CLIENTS * EACH, statuses
    assert overflowed, "no request overflowed the connection pool"
    # Many are served too (in Istio's task most; here a busy machine makes it vary).
    assert statuses.count(200) >= EACH // 2
    assert all(r.headers.get("x-envoy-overloaded") == "true" for r in overflowed)
    cluster = f"cluster.{CLUSTER}"
    assert page.admin.stat(f"{cluster}.upstream_rq_pending_overflow") == len(overflowed)
    # Every request had a connection of its own: none was reused.
    assert page.admin.stat(f"{cluster}.upstream_cx_total") == statuses.count(200)
    with page.client() as client:
        assert client.get("ratings").status == 200  # the connection, before two requests wait
    kept_alive = [r.status for r in two_keepalive_clients(page, "ratings")]
    assert kept_alive == [200] * CLIENTS * EACH
