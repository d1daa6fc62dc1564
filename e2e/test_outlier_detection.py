"""Outlier ejection of a failing instance: after consecutive 5xx, Envoy stops sending to it."""

from __future__ import annotations

from harness.mesh import MeshEnv
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


def test_a_failing_instance_is_ejected_and_the_good_one_serves_all(mesh_env: MeshEnv) -> None:
    page, (good, bad) = start_called(mesh_env, MESH, ["reviews", "reviews"])
    ejections = f"cluster.{CLUSTER}.outlier_detection.ejections_active"
    fail_bad = {"x-fail-ip": bad.ip}  # the instance on that IP answers 503, the other 200

    with page.client() as client:
        before: list[HttpReply] = []

        def ejected() -> bool:
            before.append(client.get("reviews", "/", **fail_bad))
            return page.admin.stat(ejections) == 1

        wait_for(ejected, 10, interval=0, message="the failing instance to be ejected")
        after = [client.get("reviews", "/", **fail_bad) for _ in range(20)]

    failed = [r for r in before if r.status == 503]
    assert len(failed) >= CONSECUTIVE_5XX
    assert {r.headers["x-app-ip"] for r in failed} == {bad.ip}
    assert [(r.status, r.headers["x-app-ip"]) for r in after] == [(200, good.ip)] * 20
    hosts = {h.address: h for h in page.admin.clusters()[CLUSTER]}
    assert hosts[bad.ip].health.get("failed_outlier_check") is True
    assert hosts[good.ip].healthy
    assert page.admin.stat(f"cluster.{CLUSTER}.outlier_detection.ejections_enforced_total") == 1
