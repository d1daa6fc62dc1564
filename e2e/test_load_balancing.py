"""Load balancing policies: Envoy takes each one and traffic flows; round robin spreads evenly."""

from __future__ import annotations

from collections import Counter

from harness.mesh import MeshEnv
from harness.stats import binomial_bounds

POLICIES = {"rr": "round_robin", "lr": "least_request", "rand": "random"}
REQUESTS = 100


def balanced_mesh(ips: list[str]) -> str:
    """One service per policy, all with the same two app instances as static endpoints."""
    endpoints = ", ".join(f"{{address: {ip}, port: 8080}}" for ip in ips)
    services = "".join(
        f"""
          {name}:
            port: 9080
            load_balancer: {policy}
            endpoints: [{endpoints}]"""
        for name, policy in POLICIES.items()
    )
    return f"""
        mesh: e2e
        services:
          productpage:
            port: 9080{services}
        """


def test_each_policy_is_applied_and_round_robin_spreads_evenly(mesh_env: MeshEnv) -> None:
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

    served: dict[str, Counter[str]] = {}
    with page.client() as client:
        for name in POLICIES:
            replies = [client.get(name) for _ in range(REQUESTS)]
            assert [r.status for r in replies] == [200] * REQUESTS, name
            served[name] = Counter(r.json()["ip"] for r in replies)

    assert all(set(counts) == set(ips) for counts in served.values()), served
    low, high = binomial_bounds(REQUESTS, 0.5)
    assert low <= served["rr"][ips[0]] <= high, served["rr"]
