"""Uniform mesh metrics from access-log entries (contract section 7)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from meshpilot.telemetry.entries import LogEntry

disable_created_metrics()  # type: ignore[no-untyped-call]

_EDGE = ["reporter", "source_service", "destination_service", "destination_version"]
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class MeshMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "mesh_requests",
            "Requests through the mesh, counted once by each reporting sidecar",
            [*_EDGE, "response_code"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "mesh_request_duration_seconds",
            "Time from the request's start to the last byte of the response, per reporter",
            _EDGE,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._audits = Counter(
            "mesh_policy_audit_matches",
            "Requests that matched an audit policy (recorded, not enforced)",
            ["policy", "source_service", "destination_service"],
            registry=self.registry,
        )
        self._dropped = Counter(
            "mesh_access_log_entries_dropped",
            "Access-log entries the mixer could not process in time",
            registry=self.registry,
        )

    def record(self, entries: Iterable[LogEntry]) -> None:
        for e in entries:
            edge = (e.reporter, e.source_service, e.destination_service, e.destination_version)
            self._requests.labels(*edge, str(e.response_code)).inc()
            self._duration.labels(*edge).observe(e.duration_s)
            if e.audit_policy and e.reporter == "destination":
                self._audits.labels(e.audit_policy, e.source_service, e.destination_service).inc()

    def dropped(self, count: int) -> None:
        self._dropped.inc(count)
