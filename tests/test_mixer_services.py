"""The mixer's gRPC services over a real in-process gRPC server with mTLS: ext_authz and access
logs, callers known by their workload certificates (issue #12's forged-log and direct-check
attacks included)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import struct_pb2, wrappers_pb2
from prometheus_client import generate_latest

from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.workload_tls import WorkloadServerCredentials
from meshpilot.model import ir
from meshpilot.model.names import MIXER_SERVICE
from meshpilot.policy.authz import AuthorizationService
from meshpilot.policy.engine import CustomPolicies
from meshpilot.telemetry.als import AccessLogService
from meshpilot.telemetry.entries import LogEntry
from meshpilot.telemetry.metrics import KnownNames, MeshMetrics
from meshpilot.telemetry.store import LogStore
from tests.conftest import free_port
from tests.support.certs import client_credentials, workload_credentials

HOOK = """from meshpilot.policy import Decision

def check(request):
    if request.headers.get("x-user") == "mallory":
        return Decision(False, status=451, headers={"x-policy": "quota"}, body="nope")
    return Decision(True, headers={"x-checked-by": "mixer", "x-source": str(request.source)})
"""
TRUST_DOMAIN = "demo"


class Mixer:
    """The mixer's services on a real gRPC server with mTLS, and callers' credentials."""

    def __init__(self, address: str, received: list[LogEntry], ca: CertificateAuthority) -> None:
        self.address, self.received, self.ca = address, received, ca
        self.anchor = ca.trust_anchor.public_bytes(serialization.Encoding.PEM)

    def channel(self, service: str | None = "frontend") -> grpc.aio.Channel:
        """A channel presenting `service`'s workload certificate (None: no certificate)."""
        workload = workload_credentials(self.ca, service) if service else None
        return grpc.aio.secure_channel(self.address, client_credentials(self.anchor, workload))


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
            # A generous hook timeout: these tests are about decisions, and a loaded machine
            # can take longer than the default to run a hook for the first time.
            mixer=ir.Mixer("127.0.0.1:1", timeout_ms=10_000),
            trust_domain=TRUST_DOMAIN,
        )
    )
    ca = CertificateAuthority.open(tmp_path / "ca", TRUST_DOMAIN)
    await policies.pool.start()
    received: list[LogEntry] = []
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(policies), server
    )
    als_pb2_grpc.add_AccessLogServiceServicer_to_server(
        AccessLogService(received.extend, mtls=True), server
    )
    address = f"127.0.0.1:{free_port()}"
    # The mixer's real certificate names only its SPIFFE ID, which Envoy checks; gRPC's Python
    # client checks host names, so this in-process server has one of the CA's server
    # certificates, with the same client-certificate requirement.
    served = ca.server_certificate([], ["127.0.0.1"])
    anchor = ca.trust_anchor.public_bytes(serialization.Encoding.PEM)
    credentials = grpc.ssl_server_credentials(
        [(served.key_pem, served.chain_pem)], root_certificates=anchor, require_client_auth=True
    )
    server.add_secure_port(address, credentials)
    await server.start()
    yield Mixer(address, received, ca)
    await server.stop(0)
    await policies.pool.close()


def check_request(path: str, principal: str = "", **headers: str) -> external_auth_pb2.CheckRequest:
    """A check as the destination's Envoy sends it: the caller's verified principal, if any."""
    request = external_auth_pb2.CheckRequest()
    request.attributes.source.principal = principal
    http = request.attributes.request.http
    http.method, http.path = "GET", path
    http.headers.update(headers)
    return request


FRONTEND = f"spiffe://{TRUST_DOMAIN}/service/frontend"


async def check(
    mixer: Mixer, request: external_auth_pb2.CheckRequest
) -> external_auth_pb2.CheckResponse:
    async with mixer.channel("ratings") as channel:  # the destination's sidecar asks
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        return await stub.Check(request, metadata=[("x-mesh-destination", "ratings")])


def added(headers: Iterable[base_pb2.HeaderValueOption]) -> dict[str, str]:
    return {h.header.key: h.header.value for h in headers}


async def test_a_hook_allows_and_adds_headers_upstream(mixer: Mixer) -> None:
    reply = await check(mixer, check_request("/ratings/7?x=1", FRONTEND))
    assert reply.status.code == 0
    assert added(reply.ok_response.headers) == {"x-checked-by": "mixer", "x-source": "frontend"}


async def test_a_hook_denies_with_its_status_headers_and_body(mixer: Mixer) -> None:
    reply = await check(mixer, check_request("/ratings/7", FRONTEND, **{"x-user": "mallory"}))
    assert reply.status.code == 7
    assert reply.denied_response.status.code == 451
    assert reply.denied_response.body == "nope"
    assert added(reply.denied_response.headers) == {"x-policy": "quota"}


@pytest.mark.parametrize(
    "principal", ["", "spiffe://other-mesh/service/frontend", "spiffe://demo/ns/x"]
)
async def test_the_source_is_the_callers_certified_principal_never_a_header(
    mixer: Mixer, principal: str
) -> None:
    """A header claiming `frontend` names no one; a principal of another mesh neither."""
    request = check_request("/ratings/7", principal, **{"x-mesh-source": "frontend"})
    reply = await check(mixer, request)
    assert reply.status.code == 0  # the custom policy (from: frontend) does not apply
    assert "x-source" not in added(reply.ok_response.headers)


async def test_requests_no_custom_policy_matches_are_allowed(mixer: Mixer) -> None:
    other_path = await check(mixer, check_request("/other", FRONTEND))
    other_source = await check(mixer, check_request("/ratings/1", **{"x-user": "mallory"}))
    assert other_path.status.code == 0 and other_source.status.code == 0


@pytest.mark.parametrize("caller", ["no certificate", "another CA"])
async def test_only_mesh_certificates_reach_the_mixer(
    mixer: Mixer, tmp_path: Path, caller: str
) -> None:
    """Direct ext_authz calls and forged access logs without a mesh certificate fail at the
    TLS handshake: nothing is decided, nothing counted."""
    if caller == "no certificate":
        channel = mixer.channel(None)
    else:
        rogue = CertificateAuthority.open(tmp_path / "rogue", TRUST_DOMAIN)
        workload = workload_credentials(rogue, "frontend")
        channel = grpc.aio.secure_channel(mixer.address, client_credentials(mixer.anchor, workload))
    async with channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Check(check_request("/ratings/1", FRONTEND), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        forged = als_pb2.StreamAccessLogsMessage(identifier=identifier("ratings", "v1", "inbound"))
        forged.http_logs.log_entry.extend([http_entry(200, "inbound|8080||")] * 100)
        with pytest.raises(grpc.aio.AioRpcError):
            await als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(
                _messages([forged]), timeout=5
            )
    assert mixer.received == []


def http_entry(
    code: int, cluster: str = "", peer: str | None = None
) -> accesslog_pb2.HTTPAccessLogEntry:
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.common_properties.upstream_cluster = cluster
    entry.common_properties.time_to_last_downstream_tx_byte.FromMilliseconds(12)
    entry.common_properties.start_time.FromSeconds(1_700_000_000)
    if peer is not None:
        certificate = entry.common_properties.tls_properties.peer_certificate_properties
        certificate.subject_alt_name.add(uri=peer)
    entry.request.request_method = base_pb2.RequestMethod.Value("GET")
    entry.request.path = "/ratings/1"
    entry.request.request_id = "rid-1"
    entry.request.request_headers["x-mesh-source"] = "forged"
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


async def _messages(
    messages: list[als_pb2.StreamAccessLogsMessage],
) -> AsyncIterator[als_pb2.StreamAccessLogsMessage]:
    for message in messages:
        yield message


async def send_logs(
    channel: grpc.aio.Channel, messages: list[als_pb2.StreamAccessLogsMessage]
) -> None:
    async with channel:
        await als_pb2_grpc.AccessLogServiceStub(channel).StreamAccessLogs(_messages(messages))


async def stream_logs(
    mixer: Mixer, service: str, messages: list[als_pb2.StreamAccessLogsMessage]
) -> None:
    await send_logs(mixer.channel(service), messages)


async def test_access_logs_become_entries_with_the_reporters_point_of_view(mixer: Mixer) -> None:
    outbound = als_pb2.StreamAccessLogsMessage(identifier=identifier("frontend", "v1", "outbound"))
    outbound.http_logs.log_entry.extend(
        [http_entry(200, "outbound|9080|v2|ratings"), http_entry(404)]
    )
    inbound = als_pb2.StreamAccessLogsMessage(identifier=identifier("ratings", "v2", "inbound"))
    audited = http_entry(200, "inbound|8080||", peer=FRONTEND)
    rbac = audited.common_properties.metadata.filter_metadata["envoy.filters.http.rbac"]
    rbac.update({"audit.shadow_effective_policy_id": "watch-ratings"})
    inbound.http_logs.log_entry.extend([audited])
    more = als_pb2.StreamAccessLogsMessage()
    more.http_logs.log_entry.extend([http_entry(503, "inbound|8080||")])
    await stream_logs(mixer, "frontend", [outbound])
    await stream_logs(mixer, "ratings", [inbound, more])
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


async def test_a_sidecar_reports_only_as_the_service_its_certificate_names(mixer: Mixer) -> None:
    forged = als_pb2.StreamAccessLogsMessage(identifier=identifier("ratings", "v1", "inbound"))
    forged.http_logs.log_entry.extend([http_entry(200, "inbound|8080||", peer=FRONTEND)] * 10)
    await stream_logs(mixer, "frontend", [forged])  # frontend's certificate, ratings' logs
    assert mixer.received == []


def entry(reporter: str, source: str, code: int, at: float, ms: float = 10) -> LogEntry:
    return LogEntry(
        at, reporter, source, "ratings", "v1", code, ms / 1000, "GET", "/r", "ratings", "id"
    )


KNOWN = KnownNames(frozenset({"frontend", "ratings"}), frozenset({"v1"}), frozenset())


def test_metrics_count_each_entry_once_per_reporter() -> None:
    metrics = MeshMetrics()
    metrics.known = KNOWN
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


def test_label_values_are_the_meshs_own_names_whatever_is_sent() -> None:
    """50,000 entries with random names used to make /metrics 146 MB: now one series."""
    metrics = MeshMetrics()
    metrics.known = KNOWN
    metrics.record(
        [
            LogEntry(1, f"r-{i}", f"s-{i}", f"d-{i}", f"v-{i}", 200, 0.01, "GET", "/", "x", "id")
            for i in range(50_000)
        ]
    )
    exposed = generate_latest(metrics.registry)
    assert len(exposed) < 10_000
    labels = dict.fromkeys(("reporter", "source_service", "destination_service"), "unknown")
    labels |= {"destination_version": "unknown", "response_code": "200"}
    assert metrics.registry.get_sample_value("mesh_requests_total", labels) == 50_000


def test_series_past_the_cap_are_dropped_and_counted() -> None:
    metrics = MeshMetrics(max_series=3)
    metrics.known = KNOWN
    metrics.record([entry("source", "frontend", code, 1) for code in (200, 201, 202, 203, 204)])
    value = metrics.registry.get_sample_value
    assert value("mesh_telemetry_series_dropped_total") == 2
    assert (
        sum(
            value("mesh_requests_total", {**EDGE, "response_code": str(c)}) or 0
            for c in (200, 201, 202, 203, 204)
        )
        == 3
    )


EDGE = {
    "reporter": "source",
    "source_service": "frontend",
    "destination_service": "ratings",
    "destination_version": "v1",
}


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


def test_top_counts_4xx_and_5xx_as_errors_each_in_its_own_column() -> None:
    store = LogStore()
    codes = [200, 403, 403, 429, 503, 0, 200, 200]  # 0: no answer at all
    store.add([entry("source", "frontend", code, 100) for code in codes])
    (edge,) = store.top(window_s=10, now=105)
    assert (edge["error_rate_4xx"], edge["error_rate_5xx"]) == (3 / 8, 2 / 8)
    assert edge["error_rate"] == 5 / 8


def test_a_follower_reads_every_entry_once_in_order_of_arrival() -> None:
    """Pages of `after=<last seq>` see each entry exactly once, however many arrive between two
    reads, and a filter skips what does not match without losing the place."""
    store = LogStore()
    seen: list[int] = []
    cursor = 0
    for batch in ([200, 404, 200], [], [200] * 5, [404, 200]):
        store.add([entry("source", "frontend", code, 100 + len(seen)) for code in batch])
        while page := store.query(status=200, limit=2, after=cursor):
            seen += [e["seq"] for e in page]
            cursor = page[-1]["seq"]
    assert seen == [1, 3, 4, 5, 6, 7, 8, 10]
    assert [e["seq"] for e in store.query(limit=3)] == [8, 9, 10]  # the newest, oldest first


def test_renewed_credentials_reach_the_next_handshake_once(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path / "ca", TRUST_DOMAIN)
    tls = WorkloadServerCredentials(workload_credentials(ca, MIXER_SERVICE))
    assert tls.credentials() is not None
    assert tls._fetch() is None  # nothing new: gRPC keeps what it has
    tls.renewed(workload_credentials(ca, MIXER_SERVICE))
    assert isinstance(tls._fetch(), grpc.ServerCertificateConfiguration)
    assert tls._fetch() is None
