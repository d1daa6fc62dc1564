"""Global rate limits: one count for every instance of a service, kept in Redis by the mixers
that sidecars ask over Envoy's rate-limit API; real Envoy, real Redis, real traffic."""

from __future__ import annotations

import re

from harness.client import MeshClient
from harness.mesh import Instance, MeshEnv, Mixer
from harness.processes import Proc
from harness.wait import HttpReply, wait_for
from meshes import CALLER

from tests.support.redis import REDIS_PORT, redis_argv, wait_redis

LIMIT = 5
# A day-long window: a test does not straddle two windows (unless run across midnight UTC).
MESH = f"""
mesh: e2e
mixer: {{redis: REDIS, timeout: 1s}}
services:
  {CALLER}: {{port: 9080}}
  reviews:
    port: 9080
    rate_limit: {{rate: {LIMIT} per 24h, scope: global}}
"""


def start_redis(env: MeshEnv) -> tuple[str, Proc]:
    """`redis-server` on an IP of the test's own, stopped with the test's other processes."""
    ip = env.ips.ip()
    proc = env.processes.start("redis", redis_argv(ip))
    wait_redis(ip, procs=[proc])
    return f"{ip}:{REDIS_PORT}", proc


def statuses(replies: list[HttpReply]) -> list[int]:
    return [r.status for r in replies]


def decisions(mixer: Mixer, decision: str) -> float:
    """The mixer's count of one kind of decision about reviews' limit."""
    found = re.search(
        rf'mesh_rate_limit_decisions_total{{decision="{decision}",route="",service="reviews"}} '
        r"([0-9.e+]+)",
        mixer.metrics(),
    )
    return float(found.group(1)) if found else 0.0


def start(env: MeshEnv) -> tuple[Instance, list[Instance], Mixer, Proc]:
    """Redis, the control plane and a mixer, a caller and two reviews instances (two sidecars,
    each asking the mixer); returns once the caller balances over both."""
    redis, redis_proc = start_redis(env)
    _, mixer = env.start_with_mixer(env.write_mesh(MESH.replace("REDIS", redis)))
    page = env.start_instance(CALLER, "v1")
    reviews = [env.start_instance("reviews", "v1") for _ in range(2)]
    page.admin.wait_hosts("outbound|9080||reviews", [r.inbound for r in reviews])
    return page, reviews, mixer, redis_proc


def test_exactly_the_limit_passes_over_all_instances_then_429s(mesh_env: MeshEnv) -> None:
    page, reviews, mixer, _ = start(mesh_env)
    with page.client() as client:
        replies = [client.get("reviews", "/") for _ in range(LIMIT + 6)]
    assert statuses(replies) == [200] * LIMIT + [429] * 6, statuses(replies)
    served_by = {r.headers.get("x-app-ip") for r in replies[:LIMIT]}
    assert served_by == {r.ip for r in reviews}  # both sidecars counted into one limit
    assert all(r.headers.get("x-envoy-ratelimited") == "true" for r in replies[LIMIT:])
    wait_for(lambda: decisions(mixer, "limited") == 6, 5, message="6 limited in the metrics")
    assert decisions(mixer, "allowed") == LIMIT


def test_with_redis_down_requests_pass(mesh_env: MeshEnv) -> None:
    """Fail open (Istio's and Envoy's default): the limit's counters gone, the service is not."""
    page, _, mixer, redis_proc = start(mesh_env)
    with page.client() as client:
        limited = [client.get("reviews", "/") for _ in range(LIMIT + 1)]
        mesh_env.processes.stop(redis_proc)
        unchecked = [client.get("reviews", "/") for _ in range(4)]
    assert statuses(limited)[-1] == 429
    assert statuses(unchecked) == [200] * 4, statuses(unchecked)
    wait_for(lambda: decisions(mixer, "error") == 4, 5, message="4 errors in the metrics")


def test_two_mixers_share_one_count_in_redis(mesh_env: MeshEnv) -> None:
    """Each reviews sidecar joins its own control plane, which names its own mixer (`serve
    --mixer`); both mixers count in one Redis, so the limit holds for the pair."""
    redis, _ = start_redis(mesh_env)
    permissive = MESH.replace("REDIS", redis) + "security: {mtls: permissive}\n"
    mesh = mesh_env.write_mesh(permissive)
    mixers: list[Mixer] = []
    reviews: list[Instance] = []
    for _ in range(2):
        mixer_ip = mesh_env.ips.ip()
        plane = mesh_env.start_control_plane(mesh, mixer=Mixer(mixer_ip).grpc)
        mixers.append(mesh_env.start_mixer(mesh, mixer_ip))
        token = mesh_env.token("reviews", {"version": "v1"})
        reviews.append(mesh_env.start_instance("reviews", "v1", xds=plane.xds, token=token))
    replies = []
    for i in range(2 * LIMIT):
        with MeshClient(reviews[i % 2].ip, 15006) as client:  # plaintext: a permissive port
            replies.append(client.get("reviews", "/"))
    assert statuses(replies) == [200] * LIMIT + [429] * LIMIT, statuses(replies)
    for mixer in mixers:
        wait_for(lambda m=mixer: decisions(m, "allowed") >= 2, 5, message="both mixers counted")
