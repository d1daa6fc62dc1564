"""A bounded in-memory store of recent access-log entries, for `meshpilot logs` and `top`.

Each entry gets a sequence number as it arrives: `logs --follow` asks for what came after the
last one it printed, so it misses and repeats nothing however many arrive between two polls."""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from meshpilot.telemetry.entries import UNKNOWN, LogEntry

DEFAULT_CAPACITY = 20_000


Stored = tuple[int, LogEntry]  # (sequence number, entry)


class LogStore:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._entries: deque[Stored] = deque(maxlen=capacity)
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, entries: Iterable[LogEntry]) -> None:
        with self._lock:
            self._entries.extend((next(self._sequence), e) for e in entries)

    def _snapshot(self) -> list[Stored]:
        with self._lock:
            return list(self._entries)

    def query(
        self,
        service: str | None = None,
        status: int | None = None,
        path: str | None = None,
        limit: int = 100,
        after: int | None = None,
    ) -> list[dict[str, Any]]:
        """Entries about `service` (as source or destination), with that status code, whose path
        contains `path`, oldest first, each with its `seq`: the newest `limit` of them, or with
        `after` (a `seq`) the first `limit` that arrived after that one."""

        def wanted(stored: Stored) -> bool:
            e = stored[1]
            return (
                (service is None or service in (e.source_service, e.destination_service))
                and (status is None or e.response_code == status)
                and (path is None or path in e.path)
            )

        snapshot = self._snapshot()
        if after is None:
            found = list(itertools.islice(filter(wanted, reversed(snapshot)), limit))[::-1]
        else:
            newer = snapshot[bisect.bisect_right(snapshot, after, key=lambda s: s[0]) :]
            found = list(itertools.islice(filter(wanted, newer), limit))
        return [{"seq": seq, **asdict(e)} for seq, e in found]

    def top(
        self, window_s: float = 60.0, now: float | None = None, by_version: bool = False
    ) -> list[dict[str, Any]]:
        """Per caller -> callee edge over the last `window_s`: rate, error rate, p50 and p99;
        `by_version` splits each edge by the callee's version (the console's service graph).

        Each request counts once: as its caller's sidecar saw it, or as the callee's sidecar saw
        it when no sidecar made the call.
        """
        since = (now or time.time()) - window_s
        edges: dict[tuple[str, ...], list[LogEntry]] = defaultdict(list)
        for _, e in self._snapshot():
            seen_by_caller = e.reporter == "source"
            if e.timestamp >= since and (seen_by_caller or e.source_service == UNKNOWN):
                version = (e.destination_version,) if by_version else ()
                edges[(e.source_service, e.destination_service, *version)].append(e)
        return [_edge_stats(edge, entries, window_s) for edge, entries in sorted(edges.items())]


def _edge_stats(edge: tuple[str, ...], entries: list[LogEntry], window_s: float) -> dict[str, Any]:
    """`error_rate` counts 4xx (denied, rate-limited, not found) and 5xx (no answer included),
    each also on its own; `denied` counts the 403s (RBAC or ext_authz said no)."""
    durations = sorted(e.duration_s for e in entries)
    client_errors = sum(1 for e in entries if 400 <= e.response_code < 500)
    server_errors = sum(1 for e in entries if e.response_code >= 500 or e.response_code == 0)
    version = {"destination_version": edge[2]} if len(edge) > 2 else {}
    return {
        "source": edge[0],
        "destination": edge[1],
        **version,
        "requests": len(entries),
        "denied": sum(1 for e in entries if e.response_code == 403),
        "rps": len(entries) / window_s,
        "error_rate": (client_errors + server_errors) / len(entries),
        "error_rate_4xx": client_errors / len(entries),
        "error_rate_5xx": server_errors / len(entries),
        "p50_ms": _quantile(durations, 0.50) * 1000,
        "p99_ms": _quantile(durations, 0.99) * 1000,
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
