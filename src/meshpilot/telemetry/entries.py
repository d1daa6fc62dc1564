"""Envoy access-log entries (gRPC ALS) as uniform records: who called whom, how it went.

Each request through the mesh is logged twice: by the caller's outbound listener
(reporter "source") and by the callee's inbound listener (reporter "destination"). The callee
knows its caller by the mTLS certificate it presented (no certificate: "unknown").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import json_format

from meshpilot import identity
from meshpilot.identity.spiffe import service_of
from meshpilot.model import names

UNKNOWN = "unknown"
REPORTERS = {names.OUTBOUND_LISTENER: "source", names.INBOUND_LISTENER: "destination"}
_RBAC = "envoy.filters.http.rbac"
_AUDIT_KEY = names.AUDIT_PREFIX + "shadow_effective_policy_id"  # the matched audit policy


@dataclass(frozen=True, slots=True)
class LogEntry:
    timestamp: float
    reporter: str
    source_service: str
    destination_service: str
    destination_version: str
    response_code: int
    duration_s: float
    method: str
    path: str
    authority: str
    request_id: str
    audit_policy: str = ""


@dataclass(frozen=True)
class Reporter:
    """The sidecar that streams the entries, from the stream's first message."""

    kind: str  # source | destination
    service: str
    version: str

    @classmethod
    def of(cls, node: base_pb2.Node, log_name: str) -> Reporter:
        metadata = json_format.MessageToDict(node.metadata)
        labels = metadata.get("labels") or {}
        return cls(
            REPORTERS.get(log_name, log_name),
            str(metadata.get("service") or node.cluster or UNKNOWN),
            str(labels.get("version") or UNKNOWN),
        )


def service_of_cluster(cluster: str) -> str:
    """`outbound|9080|v1|reviews` -> `reviews`; anything else (no route, no cluster): unknown."""
    parts = cluster.split("|")
    return parts[3] if len(parts) == 4 and parts[0] == "outbound" and parts[3] else UNKNOWN


def log_entry(reporter: Reporter, entry: accesslog_pb2.HTTPAccessLogEntry) -> LogEntry:
    common, request, response = entry.common_properties, entry.request, entry.response
    if reporter.kind == "source":
        source = reporter.service
        destination = service_of_cluster(common.upstream_cluster)
        version = response.response_headers.get(identity.VERSION_HEADER) or UNKNOWN
    else:
        source = peer_service(common) or UNKNOWN
        destination, version = reporter.service, reporter.version
    duration = common.time_to_last_downstream_tx_byte
    return LogEntry(
        timestamp=common.start_time.seconds + common.start_time.nanos / 1e9,
        reporter=reporter.kind,
        source_service=source,
        destination_service=destination,
        destination_version=version,
        response_code=response.response_code.value,
        duration_s=duration.seconds + duration.nanos / 1e9,
        method=base_pb2.RequestMethod.Name(request.request_method),
        path=request.path,
        authority=request.authority,
        request_id=request.request_id,
        audit_policy=audit_policy(common),
    )


def peer_service(common: accesslog_pb2.AccessLogCommon) -> str | None:
    """The caller's service, from the certificate it presented to the inbound port (mTLS)."""
    for san in common.tls_properties.peer_certificate_properties.subject_alt_name:
        found = service_of(san.uri)
        if found is not None:
            return found
    return None


def audit_policy(common: accesslog_pb2.AccessLogCommon) -> str:
    """The audit policy the request matched: the RBAC filters' dynamic metadata names it."""
    rbac = common.metadata.filter_metadata.get(_RBAC)
    if rbac is None or _AUDIT_KEY not in rbac.fields:
        return ""
    return str(rbac.fields[_AUDIT_KEY].string_value)


def log_entries(
    reporter: Reporter, entries: Iterable[accesslog_pb2.HTTPAccessLogEntry]
) -> list[LogEntry]:
    return [log_entry(reporter, e) for e in entries]
