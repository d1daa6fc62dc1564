"""Uniform mesh metrics from access-log entries (contract section 7).

Bounded whatever is sent: label values are only the mesh's own service, version and policy
names (anything else is `unknown`), and past MAX_SERIES distinct label sets new ones are dropped
and counted, so that `/metrics` stays small and fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from meshpilot.mesh.schema import MeshSpec
from meshpilot.telemetry.entries import REPORTERS, UNKNOWN, LogEntry

disable_created_metrics()  # type: ignore[no-untyped-call]

_EDGE = ["reporter", "source_service", "destination_service", "destination_version"]
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
MAX_SERIES = 10_000  # distinct (edge, response code) label sets
REPORTER_KINDS = frozenset(REPORTERS.values())


@dataclass(frozen=True)
class KnownNames:
    """The names a label may take: the mesh file's services, versions and policies."""

    services: frozenset[str] = frozenset()
    versions: frozenset[str] = frozenset()
    policies: frozenset[str] = frozenset()

    @classmethod
    def of(cls, spec: MeshSpec) -> KnownNames:
        versions = set()
        for service in spec.services.values():
            versions |= {labels.get("version") for labels in service.subsets.values()}
            versions |= {e.labels.get("version") for e in service.endpoints}
            versions |= {run.version for run in service.run}
        return cls(
            frozenset(spec.services) | frozenset(spec.gateways),  # a gateway is a source
            frozenset(v for v in versions if v),
            frozenset(p.name for p in spec.policies),
        )


def _known(value: str, names: frozenset[str]) -> str:
    return value if value in names else UNKNOWN


class MeshMetrics:
    def __init__(self, max_series: int = MAX_SERIES) -> None:
        self.known = KnownNames()
        self.max_series = max_series
        self._series: set[tuple[str, ...]] = set()
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
        self._rate_limits = Counter(
            "mesh_rate_limit_decisions",
            "Requests a global rate limit counted: allowed, limited (429) or error (Redis down)",
            ["service", "route", "decision"],
            registry=self.registry,
        )
        self._dropped = Counter(
            "mesh_access_log_entries_dropped",
            "Access-log entries the mixer could not process in time",
            registry=self.registry,
        )
        self._series_dropped = Counter(
            "mesh_telemetry_series_dropped",
            f"Entries not counted because they would have made more than {max_series} series",
            registry=self.registry,
        )

    def record(self, entries: Iterable[LogEntry]) -> None:
        known = self.known
        for e in entries:
            source = _known(e.source_service, known.services)
            destination = _known(e.destination_service, known.services)
            reporter = e.reporter if e.reporter in REPORTER_KINDS else UNKNOWN
            edge = (reporter, source, destination, _known(e.destination_version, known.versions))
            code = str(e.response_code) if 0 <= e.response_code < 1000 else UNKNOWN
            if not self._admit((*edge, code)):
                continue
            self._requests.labels(*edge, code).inc()
            self._duration.labels(*edge).observe(e.duration_s)
            if e.audit_policy and e.reporter == "destination":
                policy = _known(e.audit_policy, known.policies)
                self._audits.labels(policy, source, destination).inc()

    def _admit(self, series: tuple[str, ...]) -> bool:
        if series in self._series:
            return True
        if len(self._series) >= self.max_series:
            self._series_dropped.inc()
            return False
        self._series.add(series)
        return True

    def rate_limited(self, service: str, route: str, decision: str) -> None:
        """One global rate limit decision (names checked by the worker against the mesh file)."""
        self._rate_limits.labels(service, route, decision).inc()

    def dropped(self, count: int) -> None:
        self._dropped.inc(count)
