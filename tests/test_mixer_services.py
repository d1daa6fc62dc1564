"""The mixer's gRPC services over a real in-process gRPC server: ext_authz and access logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2, wrappers_pb2

from meshpilot.model import ir
from meshpilot.policy.authz import AuthorizationService
from meshpilot.policy.engine import CustomPolicies
from meshpilot.telemetry.als import AccessLogService
from meshpilot.telemetry.entries import LogEntry
from meshpilot.telemetry.metrics import MeshMetrics
from meshpilot.telemetry.store import LogStore
from tests.conftest import free_port

HOOK = """from meshpilot.policy import Decision

def check(request):
    if request.headers.get("x-user") == "mallory":
        return Decision(False, status=451, headers={"x-policy": "quota"}, body="nope")
    return Decision(True, headers={"x-checked-by": "mixer"})
"""


class Mixer:
    def __init__(self, address: str, received: list[LogEntry], policies: CustomPolicies) -> None:
        self.address, self.received, self.policies = address, received, policies


@pytest.fixture
async def mixer(tmp_path: Path) -> AsyncIterator[Mixer]:
    (tmp_path / "hook.py").write_text(HOOK)
    policies = CustomPolicies()
    policies.update(
        ir.MeshIR(
            "t",
            (),
            policies=(
                ir.Policy(
                    "quota",
                    "ratings",
                    "custom",
                    ("frontend",),
                    ir.PolicyTarget(paths=("/ratings/*",)),
                    f"{tmp_path}/hook.py:check",
                ),
            ),
            mixer=ir.Mixer("127.0.0.1:1"),
        )
    )
    received: list[LogEntry] = []
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(policies), server
    )
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogService(received.extend), server)
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    yield Mixer(address, received, policies)
    await server.stop(0)


def check_request(path: str, **headers: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", path
    http.headers.update(headers)
    return request


async def check(
    address: str, request: external_auth_pb2.CheckRequest
) -> external_auth_pb2.CheckResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(request, metadata=[("x-mesh-destination", "ratings")])


async def test_a_hook_allows_and_adds_headers_upstream(mixer: Mixer) -> None:
    reply = await check(
        mixer.address, check_request("/ratings/7?x=1", **{"x-mesh-source": "frontend"})
    )
    assert reply.status.code == 0
    assert [(h.header.key, h.header.value) for h in reply.ok_response.headers] == [
        ("x-checked-by", "mixer")
    ]


async def test_a_hook_denies_with_its_status_headers_and_body(mixer: Mixer) -> None:
    reply = await check(
        mixer.address,
        check_request("/ratings/7", **{"x-mesh-source": "frontend", "x-user": "mallory"}),
    )
    assert reply.status.code == 7
    assert reply.denied_response.status.code == 451
    assert reply.denied_response.body == "nope"
    assert [(h.header.key, h.header.value) for h in reply.denied_response.headers] == [
        ("x-policy", "quota")
    ]


async def test_requests_no_custom_policy_matches_are_allowed(mixer: Mixer) -> None:
    other_path = await check(
        mixer.address, check_request("/other", **{"x-mesh-source": "frontend"})
    )
    other_source = await check(mixer.address, check_request("/ratings/1", **{"x-user": "mallory"}))
    assert other_path.status.code == 0 and other_source.status.code == 0


def http_entry(
    code: int, cluster: str = "", **request_headers: str
) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.common_properties.upstream_cluster = cluster
    entry.common_properties.time_to_last_downstream_tx_byte.FromMilliseconds(12)
    entry.common_properties.start_time.FromSeconds(1_700_000_000)
    entry.request.request_method = base_pb2.RequestMethod.Value("GET")
    entry.request.path = "/ratings/1"
    entry.request.request_id = "rid-1"
    entry.request.request_headers.update(request_headers)
    entry.response.response_code.CopyFrom(wrappers_pb2.UInt32Value(value=code))
    entry.response.response_headers["x-mesh-version"] = "v2"
    return entry


def identifier(
    service: str, version: str, log_name: str
) -> als_pb2.StreamAccessLogsMessage.Identifier:
    metadata = struct_pb2.Struct()
    metadata.update({"service": service, "labels": {"version": version}})
    return als_pb2.StreamAccessLogsMessage.Identifier(
        node=base_pb2.Node(id=f"{service}~ip", metadata=metadata), log_name=log_name
    )


async def stream_logs(address: str, messages: list[als_pb2.StreamAccessLogsMessage]) -> None:
    async def requests() -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
        for message in messages:
            yield message

    async with grpc.aio.insecure_channel(address) as channel:
        await als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(requests())


async def test_access_logs_become_entries_with_the_reporters_point_of_view(mixer: Mixer) -> None:
    outbound = als_pb2.StreamAccessLogsMessage(identifier=identifier("frontend", "v1", "outbound"))
    outbound.http_logs.log_entry.extend(
        [http_entry(200, "outbound|9080|v2|ratings"), http_entry(404)]
    )
    inbound = als_pb2.StreamAccessLogsMessage(identifier=identifier("ratings", "v2", "inbound"))
    audited = http_entry(200, "inbound|8080||", **{"x-mesh-source": "frontend"})
    rbac = audited.common_properties.metadata.filter_metadata["envoy.filters.http.rbac"]
    rbac.update({"audit.shadow_effective_policy_id": "watch-ratings"})
    inbound.http_logs.log_entry.extend([audited])
    more = als_pb2.StreamAccessLogsMessage()
    more.http_logs.log_entry.extend([http_entry(503, "inbound|8080||")])
    await stream_logs(mixer.address, [outbound])
    await stream_logs(mixer.address, [inbound, more])
    seen = [
        (
            e.reporter,
            e.source_service,
            e.destination_service,
            e.destination_version,
            e.response_code,
        )
        for e in mixer.received
    ]
    assert seen == [
        ("source", "frontend", "ratings", "v2", 200),
        ("source", "frontend", "unknown", "v2", 404),
        ("destination", "frontend", "ratings", "v2", 200),
        ("destination", "unknown", "ratings", "v2", 503),
    ]
    assert mixer.received[0].duration_s == pytest.approx(0.012)
    assert mixer.received[0].request_id == "rid-1"
    assert [e.audit_policy for e in mixer.received] == ["", "", "watch-ratings", ""]


def entry(reporter: str, source: str, code: int, at: float, ms: float = 10) -> LogEntry:
    return LogEntry(
        at, reporter, source, "ratings", "v1", code, ms / 1000, "GET", "/r", "ratings", "id"
    )


def test_metrics_count_each_entry_once_per_reporter() -> None:
    metrics = MeshMetrics()
    metrics.record(
        [
            entry("source", "frontend", 200, 1),
            entry("destination", "frontend", 200, 1),
            entry("source", "frontend", 403, 2),
        ]
    )
    value = metrics.registry.get_sample_value
    labels = {
        "source_service": "frontend",
        "destination_service": "ratings",
        "destination_version": "v1",
    }
    assert (
        value("mesh_requests_total", {"reporter": "source", **labels, "response_code": "200"}) == 1
    )
    assert (
        value("mesh_requests_total", {"reporter": "source", **labels, "response_code": "403"}) == 1
    )
    assert (
        value("mesh_requests_total", {"reporter": "destination", **labels, "response_code": "200"})
        == 1
    )
    assert value("mesh_request_duration_seconds_count", {"reporter": "source", **labels}) == 2


def test_the_store_filters_and_summarizes_edges() -> None:
    store = LogStore(capacity=3)
    store.add([entry("source", "frontend", 200, 100, 5), entry("source", "frontend", 500, 101, 50)])
    store.add(
        [entry("destination", "unknown", 403, 102), entry("destination", "frontend", 200, 103)]
    )
    assert [e["response_code"] for e in store.query()] == [500, 403, 200]  # capacity keeps 3
    assert [e["response_code"] for e in store.query(status=403)] == [403]
    top = store.top(window_s=10, now=105)
    assert [(t["source"], t["destination"], t["requests"]) for t in top] == [
        ("frontend", "ratings", 1),
        ("unknown", "ratings", 1),
    ]
    assert top[0]["error_rate"] == 1.0 and top[0]["p99_ms"] == pytest.approx(50)
