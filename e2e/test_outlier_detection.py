"""Outlier ejection of a failing instance: after consecutive 5xx, Envoy stops sending to it."""

from __future__ import annotations

from harness.client import MeshClient
from harness.mesh import Instance, MeshEnv
from harness.wait import HttpReply, wait_for
from meshes import reviews_with, start_called

CLUSTER = "outbound|9080||reviews"
CONSECUTIVE_5XX = 3
MESH = reviews_with(
    f"""
    outlier_detection:
      consecutive_5xx: {CONSECUTIVE_5XX}
      interval: 100ms
      base_ejection_time: 30s
    routes: [{{name: all, retries: {{attempts: 0}}}}]
    """
)
# No max_ejection_percent: Envoy's default (10% of 2 members) would eject none, but one member
# can always be ejected. No retries: the caller sees the 503s that count towards the ejection
# (with the default policy it would see the good instance's answer to the retry).


EJECTIONS = f"cluster.{CLUSTER}.outlier_detection.ejections_active"


def until_ejected(page: Instance, client: MeshClient, fail_bad: dict[str, str]) -> list[HttpReply]:
    """The replies to requests sent until the caller's sidecar ejects the failing instance."""
    replies: list[HttpReply] = []

    def ejected() -> bool:
        replies.append(client.get("reviews", "/", **fail_bad))
        return page.admin.stat(EJECTIONS) == 1

    wait_for(ejected, 10, interval=0, message="the failing instance to be ejected")
    return replies


def test_a_failing_instance_is_ejected_and_the_good_one_serves_all(mesh_env: MeshEnv) -> None:
    page, (good, bad) = start_called(mesh_env, MESH, ["reviews", "reviews"])
    fail_bad = {"x-fail-ip": bad.ip}  # the instance on that IP answers 503, the other 200

    with page.client() as client:
        before = until_ejected(page, client, fail_bad)
        after = [client.get("reviews", "/", **fail_bad) for _ in range(20)]

    failed = [r for r in before if r.status == 503]
    assert len(failed) >= CONSECUTIVE_5XX
    assert {r.headers["x-app-ip"] for r in failed} == {bad.ip}
    assert [(r.status, r.headers["x-app-ip"]) for r in after] == [(200, good.ip)] * 20
    hosts = {h.address: h for h in page.admin.clusters()[CLUSTER]}
    assert hosts[bad.ip].health.get("failed_outlier_check") is True
    assert hosts[good.ip].healthy
    assert page.admin.stat(f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total") == 1


def test_below_min_health_percent_the_ejected_instance_serves_again(mesh_env: MeshEnv) -> None:
    """With one of two instances ejected, 50 % are healthy: under `min_health_percent: 60`
    Envoy balances over both again (its panic mode), the failing one included."""
    mesh = MESH.replace(
        "base_ejection_time: 30s", "base_ejection_time: 30s\n      min_health_percent: 60"
    )
    page, (good, bad) = start_called(mesh_env, mesh, ["reviews", "reviews"])
    fail_bad = {"x-fail-ip": bad.ip}
    with page.client() as client:
        until_ejected(page, client, fail_bad)
        panics = page.admin.stat(f"cluster.{CLUSTER}.lb_healthy_panic")
        after = [client.get("reviews", "/", **fail_bad) for _ in range(20)]
    answered_by = [r.headers["x-app-ip"] for r in after]
    assert page.admin.stat(EJECTIONS) == 1  # still ejected...
    assert answered_by.count(bad.ip) >= 5, answered_by  # ...and still sent requests
    assert answered_by.count(good.ip) >= 5, answered_by
    assert page.admin.stat(f"cluster.{CLUSTER}.lb_healthy_panic") - panics == 20
    assert page.admin.dynamic_clusters()[CLUSTER]["common_lb_config"][
        "healthy_panic_threshold"
    ] == {"value": 60.0}
