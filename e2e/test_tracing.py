"""Traces that arrive: with `telemetry.tracing.collector`, every sidecar reports its spans to the
collector (Zipkin v2, or OpenTelemetry over OTLP/gRPC), and one request through two services
(frontend -> reviews -> ratings) is one trace whose spans link up, each reported under the mesh
service whose sidecar made it.

The receivers are collectors of the test's own (harness/traces.py); the apps forward the trace
headers (e2e/app.py's TRACE_HEADERS) as Istio asks of apps."""

from __future__ import annotations

import pytest
from harness.mesh import MeshEnv
from harness.traces import OtlpReceiver, Span, SpanStore, ZipkinReceiver

MESH = """
mesh: tracing
telemetry:
  tracing: {{sampling: 100, collector: "{collector}", protocol: {protocol}}}
services:
  frontend: {{port: 8080}}
  reviews: {{port: 9080}}
  ratings: {{port: 9081}}
"""
# frontend's client span (the request starts at its outbound port), reviews' server and client
# spans, ratings' server span
SPANS = 4


def one_span(spans: list[Span], service: str, kind: str) -> Span:
    found = [s for s in spans if s["localEndpoint"]["serviceName"] == service and s["kind"] == kind]
    assert len(found) == 1, f"{service} {kind}: {spans}"
    return found[0]


RECEIVERS = {"zipkin": ZipkinReceiver, "opentelemetry": OtlpReceiver}
# What the app sees of the span its sidecar made for the request: the trace id, and the span id
# in B3 (Zipkin) or as traceparent's third part (OpenTelemetry).
SEEN = {
    "zipkin": lambda h: (h["x-b3-traceid"], h["x-b3-spanid"]),
    "opentelemetry": lambda h: tuple(h["traceparent"].split("-")[1:3]),
}


@pytest.mark.parametrize("protocol", sorted(RECEIVERS))
def test_one_request_through_two_services_is_one_linked_trace(
    mesh_env: MeshEnv, protocol: str
) -> None:
    collector: SpanStore
    with RECEIVERS[protocol](mesh_env.ips.ip()) as collector:
        mesh = mesh_env.write_mesh(MESH.format(collector=collector.address, protocol=protocol))
        mesh_env.start_control_plane(mesh)
        frontend = mesh_env.start_instance("frontend", "v1")
        reviews = mesh_env.start_instance("reviews", "v1", app_port=9080)
        ratings = mesh_env.start_instance("ratings", "v1", app_port=9081)
        frontend.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])
        reviews.admin.wait_hosts("outbound|9081||ratings", [ratings.inbound])

        with frontend.client() as client:
            answer = client.get("reviews", "/call/ratings/ratings/7")
        assert answer.status == 200
        called = answer.json()["called"]
        assert called["status"] == 200 and called["json"]["service"] == "ratings"

        spans = collector.wait_for_trace(lambda spans: len(spans) >= SPANS)

    caller = one_span(spans, "frontend", "CLIENT")
    a_server = one_span(spans, "reviews", "SERVER")
    a_client = one_span(spans, "reviews", "CLIENT")
    b_server = one_span(spans, "ratings", "SERVER")
    assert "parentId" not in caller  # the request started at frontend's sidecar
    assert a_server["parentId"] == caller["id"]
    assert a_client["parentId"] == a_server["id"]
    assert b_server["parentId"] == a_client["id"]
    assert len(spans) == SPANS and len({s["id"] for s in spans}) == SPANS
    assert len(collector.traces()) == 1  # every span of the request in one trace
    assert b_server["tags"]["http.url"] == "http://ratings/ratings/7"
    assert [caller["name"], a_client["name"]] == ["reviews", "ratings"]  # the service called
    assert SEEN[protocol](called["json"]["headers"]) == (caller["traceId"], b_server["id"])
