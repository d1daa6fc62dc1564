"""Load balancing policies: Envoy takes each one and traffic flows; round robin alternates,
random and least request spread like coin flips."""

from __future__ import annotations

from collections import Counter

from harness.mesh import MeshEnv
from harness.stats import binomial_bounds, round_robin_bounds
from meshes import caller_mesh

POLICIES = {"rr": "round_robin", "lr": "least_request", "rand": "random"}
REQUESTS = 100


def balanced_mesh(ips: list[str]) -> str:
    """One service per policy, all with the same two app instances as static endpoints."""
    endpoints = ", ".join(f"{{address: {ip}, port: 8080}}" for ip in ips)
    return caller_mesh(
        "\n".join(
            f"{name}: {{port: 9080, load_balancer: {policy}, endpoints: [{endpoints}]}}"
            for name, policy in POLICIES.items()
        )
    )


def test_each_policy_is_applied_and_round_robin_alternates(mesh_env: MeshEnv) -> None:
    ips = mesh_env.ips.ips(2)
    for ip in ips:
        mesh_env.start_app("backend", "v1", ip)
    control_plane = mesh_env.start_control_plane(mesh_env.write_mesh(balanced_mesh(ips)))
    page = mesh_env.start_instance("productpage", "v1")
    control_plane.wait_synced([page.node_id])
    clusters = page.admin.dynamic_clusters()
    for name, policy in POLICIES.items():
        cluster = clusters[f"outbound|9080||{name}"]
        assert cluster.get("lb_policy", "ROUND_ROBIN") == policy.upper()
        page.admin.wait_hosts(f"outbound|9080||{name}", [f"{ip}:8080" for ip in ips])

    order: dict[str, list[str]] = {}  # policy -> the IPs that answered, in order
    with page.client() as client:
        for name in POLICIES:
            replies = [client.get(name) for _ in range(REQUESTS)]
            assert [r.status for r in replies] == [200] * REQUESTS, name
            order[name] = [r.json()["ip"] for r in replies]
    served = {name: Counter(answered) for name, answered in order.items()}

    assert all(set(counts) == set(ips) for counts in served.values()), served
    # Random and least request (two idle hosts: a random pick) spread like coin flips.
    low, high = binomial_bounds(REQUESTS, 0.5)
    for name in ("lr", "rand"):
        assert low <= served[name][ips[0]] <= high, (name, served[name])
    # Round robin is no coin. One connection, so one Envoy worker and one picker: after every
    # request each host has had its share, rounded up or down (it alternates). A random
    # balancer passes this with probability 2**-99.
    for n in range(1, REQUESTS + 1):
        low, high = round_robin_bounds(n, len(ips))
        assert low <= order["rr"][:n].count(ips[0]) <= high, f"after {n}: {order['rr'][:n]}"
