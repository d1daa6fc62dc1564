"""Access logs from every sidecar become the mixer's metrics, counting each request exactly once
per reporter (the caller's sidecar and the callee's)."""

from __future__ import annotations

import http.client
import subprocess

from harness.mesh import MESHPILOT, MeshEnv
from harness.wait import wait_for
from prometheus_client.parser import text_string_to_metric_families

MESH = """
mesh: telemetry
telemetry:
  access_log: true
  tracing: {sampling: 100}
services:
  frontend: {port: 8080}
  reviews:
    port: 9080
    subsets: {v1: {version: v1}}
    security: {mtls: permissive}  # also takes the plaintext request sent straight to it
policies:
  - name: no-admin
    service: reviews
    action: deny
    to: {paths: [/admin*]}
  - name: watch-reviews
    service: reviews
    action: audit
    from: [frontend]
    to: {paths: [/reviews/*]}
"""
OK, DENIED = 7, 3


def requests_total(metrics: str) -> dict[tuple[str, str, str, str, str], float]:
    """mesh_requests_total by (reporter, source, destination, version, code)."""
    counts = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "mesh_requests_total":
                labels = sample.labels
                key = (
                    labels["reporter"],
                    labels["source_service"],
                    labels["destination_service"],
                    labels["destination_version"],
                    labels["response_code"],
                )
                counts[key] = sample.value
    return counts


def test_metrics_count_every_request_once_per_reporter_with_its_code(mesh_env: MeshEnv) -> None:
    mesh = mesh_env.write_mesh(MESH)
    _, mixer = mesh_env.start_with_mixer(mesh, workers=2)
    frontend = mesh_env.start_instance("frontend", "v1")
    reviews = mesh_env.start_instance("reviews", "v1")
    frontend.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])

    with frontend.client() as client:
        answers = [client.get("reviews", f"/reviews/{i}") for i in range(OK)]
        denied = [client.get("reviews", "/admin/x") for _ in range(DENIED)]
    direct = http.client.HTTPConnection(reviews.ip, 15006, timeout=5)
    direct.request("GET", "/straight", headers={"Host": "reviews"})
    assert direct.getresponse().status == 200
    direct.close()
    assert [a.status for a in answers] == [200] * OK and [d.status for d in denied] == [
        403
    ] * DENIED

    expected = {
        ("source", "frontend", "reviews", "v1", "200"): OK,
        ("destination", "frontend", "reviews", "v1", "200"): OK,
        ("source", "frontend", "reviews", "v1", "403"): DENIED,  # the callee's Envoy answered
        ("destination", "frontend", "reviews", "v1", "403"): DENIED,
        ("destination", "unknown", "reviews", "v1", "200"): 1,  # no certificate vouched for it
    }
    wait_for(
        lambda: requests_total(mixer.metrics()) == expected,
        10,
        message="the mixer to count every request",
    )

    audits = 'mesh_policy_audit_matches_total{destination_service="reviews",policy="watch-reviews"'
    assert f'{audits},source_service="frontend"}} {float(OK)}' in mixer.metrics()

    request_id = answers[0].json()["headers"]["x-request-id"]
    logged = mixer.logs(service="reviews", limit="100")
    same_request = sorted(e["reporter"] for e in logged if e["request_id"] == request_id)
    assert same_request == ["destination", "source"]  # x-request-id crossed both sidecars


def run(*argv: str) -> str:
    return subprocess.run([MESHPILOT, *argv], capture_output=True, text=True, check=True).stdout


def test_logs_and_top_show_recent_requests(mesh_env: MeshEnv) -> None:
    mesh = mesh_env.write_mesh(MESH)
    _, mixer = mesh_env.start_with_mixer(mesh)
    frontend = mesh_env.start_instance("frontend", "v1")
    reviews = mesh_env.start_instance("reviews", "v1")
    frontend.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])
    with frontend.client() as client:
        for _ in range(5):
            client.get("reviews", "/reviews/1")
        client.get("reviews", "/admin/x")
    wait_for(lambda: len(mixer.logs(service="reviews")) == 12, 10, message="12 entries")

    denied = run("logs", "--mixer", mixer.http, "--status", "403").splitlines()
    assert denied[0].split()[:4] == ["TIME", "REPORTER", "SOURCE", "DESTINATION"]
    assert len(denied) == 3 and all("/admin/x" in line and " 403 " in line for line in denied[1:])
    top = run("top", "--mixer", mixer.http).splitlines()
    assert top[0].split() == [
        "SOURCE",
        "DESTINATION",
        "REQUESTS",
        "RPS",
        "4XX",
        "5XX",
        "P50",
        "MS",
        "P99",
        "MS",
    ]
    assert top[1].split()[:6] == ["frontend", "reviews", "6", "0.10", "16.7%", "0.0%"]
