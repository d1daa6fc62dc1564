"""Locality-aware load balancing through real Envoy sidecars: a caller in eu-west/a keeps to its
zone while it is healthy, fails over to its region's other zone (not another region) when the
zone's instance fails, and splits by `distribute` shares."""

from __future__ import annotations

from collections import Counter

from harness.mesh import Instance, MeshEnv
from harness.stats import binomial_bounds
from harness.wait import wait_for
from meshes import CALLER, reviews_with

CLUSTER = "outbound|9080||reviews"
HOME, NEIGHBOUR, ABROAD = "eu-west/a", "eu-west/b", "us-east/a"
SAMPLES = 600
FAILOVER_MESH = reviews_with(
    """
    outlier_detection: {consecutive_5xx: 3, interval: 100ms, base_ejection_time: 30s}
    routes: [{name: all, retries: {attempts: 0}}]
    """
)
# No retries: the caller sees the 503s that get the failing instance ejected.
DISTRIBUTE_MESH = reviews_with(
    f"""
    load_balancer:
      locality:
        distribute:
          - from: "{HOME}/*"
            to: {{"{HOME}/*": 80, "{NEIGHBOUR}/*": 20}}
    """
)


def start_zones(env: MeshEnv, mesh_text: str) -> tuple[Instance, dict[str, Instance]]:
    """Control plane, a caller in HOME and a reviews instance in each of HOME, NEIGHBOUR and
    ABROAD (by locality)."""
    env.start_control_plane(env.write_mesh(mesh_text))
    page = env.start_instance(CALLER, "v1", locality=HOME)
    zones = {z: env.start_instance("reviews", "v1", locality=z) for z in (HOME, NEIGHBOUR, ABROAD)}
    return page, zones


def answered_by(page: Instance, count: int, **headers: str) -> Counter[str]:
    """Who answered `count` requests from `page` to reviews (all of them must succeed)."""
    with page.client() as client:
        replies = [client.get("reviews", "/", **headers) for _ in range(count)]
    assert {r.status for r in replies} == {200}, Counter(r.status for r in replies)
    return Counter(r.headers["x-app-ip"] for r in replies)


def test_a_caller_keeps_to_its_zone_and_fails_over_within_its_region(mesh_env: MeshEnv) -> None:
    page, zones = start_zones(mesh_env, FAILOVER_MESH)
    home, neighbour = zones[HOME], zones[NEIGHBOUR]
    page.admin.wait_hosts(CLUSTER, [z.inbound for z in zones.values()])
    priorities = {h.address: h.priority for h in page.admin.clusters()[CLUSTER]}
    assert priorities == {home.ip: 0, neighbour.ip: 1, zones[ABROAD].ip: 2}
    control_plane = mesh_env.control_plane
    assert control_plane is not None
    registered = control_plane.proxy(page.node_id)
    assert registered is not None and registered["locality"] == HOME

    assert answered_by(page, 50) == {home.ip: 50}

    fail_home = {"x-fail-ip": home.ip}  # the home instance answers 503 to these
    ejections = f"cluster.{CLUSTER}.outlier_detection.ejections_active"
    with page.client() as client:
        wait_for(
            lambda: (
                client.get("reviews", "/", **fail_home).status == 200
                and page.admin.stat(ejections) == 1
            ),
            10,
            interval=0,
            message="the home zone's instance to be ejected",
        )
    assert answered_by(page, 50, **fail_home) == {neighbour.ip: 50}


def test_distribute_sends_the_shares_it_names_and_nothing_elsewhere(mesh_env: MeshEnv) -> None:
    page, zones = start_zones(mesh_env, DISTRIBUTE_MESH)
    home, neighbour = zones[HOME], zones[NEIGHBOUR]
    page.admin.wait_hosts(CLUSTER, [home.inbound, neighbour.inbound])  # ABROAD: no share

    counts = answered_by(page, SAMPLES)

    low, high = binomial_bounds(SAMPLES, 0.2)
    assert low <= counts[neighbour.ip] <= high, counts
    assert counts[home.ip] + counts[neighbour.ip] == SAMPLES
