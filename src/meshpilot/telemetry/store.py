"""A bounded in-memory store of recent access-log entries, for `meshpilot logs` and `top`."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from meshpilot.telemetry.entries import UNKNOWN, LogEntry

DEFAULT_CAPACITY = 20_000


class LogStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def add(self, entries: Iterable[LogEntry]) -> None:
        with self._lock:
            self._entries.extend(entries)

    def _snapshot(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)

    def query(
        self,
        service: str | None = None,
        status: int | None = None,
        path: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest entries (oldest first) about `service` (as source or destination), with
        that status code, whose path contains `path`."""
        found = [
            e
            for e in reversed(self._snapshot())
            if (service is None or service in (e.source_service, e.destination_service))
            and (status is None or e.response_code == status)
            and (path is None or path in e.path)
        ][:limit]
        return [asdict(e) for e in reversed(found)]

    def top(self, window_s: float = 60.0, now: float | None = None) -> list[dict[str, Any]]:
        """Per caller -> callee edge over the last `window_s`: rate, error rate, p50 and p99.

        Each request counts once: as its caller's sidecar saw it, or as the callee's sidecar saw
        it when no sidecar made the call.
        """
        since = (now or time.time()) - window_s
        edges: dict[tuple[str, str], list[LogEntry]] = defaultdict(list)
        for e in self._snapshot():
            seen_by_caller = e.reporter == "source"
            if e.timestamp >= since and (seen_by_caller or e.source_service == UNKNOWN):
                edges[(e.source_service, e.destination_service)].append(e)
        return [_edge_stats(edge, entries, window_s) for edge, entries in sorted(edges.items())]


def _edge_stats(edge: tuple[str, str], entries: list[LogEntry], window_s: float) -> dict[str, Any]:
    durations = sorted(e.duration_s for e in entries)
    errors = sum(1 for e in entries if e.response_code >= 500 or e.response_code == 0)
    return {
        "source": edge[0],
        "destination": edge[1],
        "requests": len(entries),
        "rps": len(entries) / window_s,
        "error_rate": errors / len(entries),
        "p50_ms": _quantile(durations, 0.50) * 1000,
        "p99_ms": _quantile(durations, 0.99) * 1000,
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
