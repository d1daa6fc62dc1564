"""Control-plane metrics (contract section 6), in a registry owned by one control plane."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from meshpilot.xds.types import short_name

disable_created_metrics()  # type: ignore[no-untyped-call]  # `*_created` series are noise

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class XdsMetrics:
    def __init__(self, connected: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        Gauge(
            "meshpilot_connected_proxies", "Proxies with an open ADS stream", registry=self.registry
        ).set_function(connected)
        self._pushes = Counter(
            "meshpilot_pushes", "Discovery responses sent", ["type"], registry=self.registry
        )
        self._nacks = Counter(
            "meshpilot_nacks",
            "Discovery responses rejected by a proxy",
            ["type"],
            registry=self.registry,
        )
        self.convergence = Histogram(
            "meshpilot_config_convergence_seconds",
            "From a change of the mesh file until every proxy ACKed it",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.translation = Histogram(
            "meshpilot_translation_seconds",
            "Time to translate a change into every proxy's view",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.push_seconds = Histogram(
            "meshpilot_push_seconds",
            "Time to compute and write one proxy's responses after it was woken",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )
        self._reloads = Counter(
            "meshpilot_mesh_reloads",
            "Saves of the mesh file handled, by result (applied, rejected, unchanged)",
            ["result"],
            registry=self.registry,
        )
        self._inconsistent = Counter(
            "meshpilot_xds_inconsistent_snapshots",
            "Proxy views refused because they refer to resources they lack",
            registry=self.registry,
        )
        self.streams_refused = Counter(
            "meshpilot_xds_streams_refused",
            "ADS streams refused at their first request, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.streams_ended = Counter(
            "meshpilot_xds_streams_ended",
            "ADS streams the control plane ended, by reason (write_timeout: a response was not "
            "read; no_answer: responses were not ACKed or NACKed)",
            ["reason"],
            registry=self.registry,
        )
        self.streams_pushing = Gauge(
            "meshpilot_xds_streams_pushing",
            "Streams holding a push permit (responses in flight)",
            registry=self.registry,
        )
        self.streams_waiting = Gauge(
            "meshpilot_xds_streams_waiting_to_push",
            "Streams waiting for a push permit",
            registry=self.registry,
        )
        self._change_started: float | None = None

    def store_up(self, connected: Callable[[], bool]) -> None:
        """`meshpilot_store_up`: 1 while the store (registry, mesh history) answers."""
        Gauge(
            "meshpilot_store_up",
            "1 while the store answers, 0 while it does not (the last state it gave serves)",
            registry=self.registry,
        ).set_function(lambda: float(connected()))

    def inconsistent_snapshots(self, count: int) -> None:
        self._inconsistent.inc(count)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 if it has none yet), as `/metrics` shows it."""
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def reloaded(self, result: str) -> None:
        self._reloads.labels(result).inc()

    def reloads(self, result: str) -> int:
        return int(self.value("meshpilot_mesh_reloads_total", {"result": result}))

    def pushed(self, type_url: str) -> None:
        self._pushes.labels(short_name(type_url)).inc()

    def nacked(self, type_url: str) -> None:
        self._nacks.labels(short_name(type_url)).inc()

    def change_started(self, at: float) -> None:
        """A new mesh file (seen at `at`, `time.monotonic()`) is being pushed."""
        self._change_started = at

    @property
    def change_pending(self) -> bool:
        return self._change_started is not None

    def check_converged(self, all_synced: Callable[[], bool]) -> None:
        if self._change_started is not None and all_synced():
            self.convergence.observe(max(0.0, time.monotonic() - self._change_started))
            self._change_started = None


CONVERGENCE_CHECK_S = 0.02


async def track_convergence(metrics: XdsMetrics, all_synced: Callable[[], bool]) -> None:
    """Observe the convergence time of each change. Checked on a timer while a change is
    pending (O(proxies) a tick), not after every reply (O(proxies) per reply: O(P^2) a change)."""
    while True:
        await asyncio.sleep(CONVERGENCE_CHECK_S)
        if metrics.change_pending:
            metrics.check_converged(all_synced)
