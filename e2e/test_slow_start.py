"""`load_balancer.warmup` (slow start): an instance that joins gets a small share of requests at
first (10 % of a full weight), growing to a full one over the warmup.

Envoy starts the warmup of every member its sidecar learns of, the first one included, and does
not report where a member is in it. So the first instance's warmup is let run out (a wait for
time, the only way) before the newcomer joins; then the newcomer's share is measured at once,
and again until it has grown to an even one. A service without warmup shows the even share a
newcomer would have had from the start.
"""

from __future__ import annotations

import time

from harness.mesh import Instance, MeshEnv
from harness.wait import wait_for
from meshes import CALLER, caller_mesh

WARMUP = 2.0  # seconds
MESH = caller_mesh(
    f"""
    reviews:
      port: 9080
      load_balancer: {{policy: round_robin, warmup: {int(WARMUP * 1000)}ms}}
    ratings:
      port: 9080
    """
)
REQUESTS = 40


def cluster(service: str) -> str:
    return f"outbound|9080||{service}"


class Newcomer:
    """A second instance of `first`'s service, joined once `first`'s own warmup is over."""

    def __init__(self, env: MeshEnv, caller: Instance, first: Instance) -> None:
        caller.admin.wait_hosts(cluster(first.service), [first.inbound])
        joined = time.monotonic()
        wait_for(lambda: time.monotonic() - joined > WARMUP, WARMUP + 1, message="warmup")
        self.caller, self.service = caller, first.service
        self.instance = env.start_instance(first.service, "v1")
        caller.admin.wait_hosts(cluster(first.service), [first.inbound, self.instance.inbound])

    def share(self) -> float:
        """Its share of REQUESTS to the service, sent now."""
        with self.caller.client() as client:
            answered_by = [client.get(self.service).headers["x-app-ip"] for _ in range(REQUESTS)]
        return answered_by.count(self.instance.ip) / REQUESTS


def test_a_new_instance_gets_a_small_share_while_it_warms_up(mesh_env: MeshEnv) -> None:
    mesh_env.start_control_plane(mesh_env.write_mesh(MESH))
    page = mesh_env.start_instance(CALLER, "v1")
    reviews = Newcomer(mesh_env, page, mesh_env.start_instance("reviews", "v1"))
    warming = reviews.share()
    ratings = Newcomer(mesh_env, page, mesh_env.start_instance("ratings", "v1"))
    even = ratings.share()
    later: list[float] = []

    def grown() -> bool:
        later.append(reviews.share())
        return later[-1] >= 0.4

    wait_for(grown, 10, message="the newcomer's share to grow to an even one")
    print(f"a new instance's share: {warming:.0%} at first, then {later}; {even:.0%} without")
    assert warming <= 0.3  # slow start begins at 10 % of a full weight
    assert 0.4 <= even <= 0.6  # round robin: every other request
    window = page.admin.dynamic_clusters()[cluster("reviews")]["round_robin_lb_config"]
    assert window["slow_start_config"]["slow_start_window"] == "2s"
