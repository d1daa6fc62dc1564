"""`meshpilot logs` and `meshpilot top`: read the mixer's store over HTTP and print tables, once
or live (`logs --follow`, `top --watch`) until Ctrl-C, which ends them with status 0."""

from __future__ import annotations

import sys
import time
from typing import Any

from meshpilot.admin.client import MIXER_HTTP, get_json
from meshpilot.admin.status import format_table
from meshpilot.errors import MeshpilotError

FOLLOW_POLL_S = 0.5
FOLLOW_BATCH = 1000  # entries per poll; a fuller batch is followed by the next at once
CLEAR_SCREEN = "\x1b[H\x1b[2J"
LOG_HEADER = [
    "TIME",
    "REPORTER",
    "SOURCE",
    "DESTINATION",
    "VERSION",
    "METHOD",
    "PATH",
    "CODE",
    "MS",
    "REQUEST ID",
]
TOP_HEADER = ["SOURCE", "DESTINATION", "REQUESTS", "RPS", "4XX", "5XX", "P50 MS", "P99 MS"]


def fetch(mixer: str, endpoint: str, **query: object) -> Any:
    return get_json(MIXER_HTTP, mixer, endpoint, query=query)


def log_row(e: dict[str, Any]) -> list[str]:
    return [
        time.strftime("%H:%M:%S", time.localtime(e["timestamp"])),
        e["reporter"],
        e["source_service"],
        e["destination_service"],
        e["destination_version"],
        e["method"],
        e["path"],
        str(e["response_code"]),
        f"{e['duration_s'] * 1000:.1f}",
        e["request_id"],
    ]


def print_logs(
    mixer: str, service: str | None, status: int | None, path: str | None, limit: int
) -> None:
    entries = fetch(mixer, "/logs", service=service, status=status, path=path, limit=limit)
    rows = [LOG_HEADER, *map(log_row, entries)]
    print(format_table(rows) if entries else "no requests recorded")


class Columns:
    """Rows printed as they arrive, each cell as wide as the widest seen so far in its column."""

    def __init__(self, header: list[str]) -> None:
        self.widths = [len(cell) for cell in header]

    def format(self, rows: list[list[str]]) -> str:
        for row in rows:
            self.widths = [max(w, len(cell)) for w, cell in zip(self.widths, row, strict=True)]
        return format_table(
            [[c.ljust(w) for c, w in zip(row, self.widths, strict=True)] for row in rows]
        )


def follow_logs(
    mixer: str, service: str | None, status: int | None, path: str | None, limit: int
) -> None:
    """The last `limit` matching requests, then every new one as the mixer stores it.

    The cursor is the store's sequence number: each poll asks for what came after the last
    entry seen, so nothing is printed twice or skipped."""
    filters = {"service": service, "status": status, "path": path}
    newest = fetch(mixer, "/logs", limit=1)
    recent = fetch(mixer, "/logs", limit=limit, **filters) if limit > 0 else []
    cursor = max(e["seq"] for e in [*newest, *recent, {"seq": 0}])
    columns = Columns(LOG_HEADER)
    print(columns.format([LOG_HEADER, *map(log_row, recent)]), flush=True)
    try:
        while True:
            new = fetch(mixer, "/logs", after=cursor, limit=FOLLOW_BATCH, **filters)
            if new:
                print(columns.format([log_row(e) for e in new]), flush=True)
                cursor = new[-1]["seq"]
            if len(new) < FOLLOW_BATCH:
                time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return


def _percent(rate: float) -> str:
    return f"{rate * 100:.1f}%"


def top_table(mixer: str, window: float) -> str:
    edges = fetch(mixer, "/top", window=window)
    rows = [TOP_HEADER]
    for e in edges:
        rows.append(
            [
                e["source"],
                e["destination"],
                str(e["requests"]),
                f"{e['rps']:.2f}",
                _percent(e["error_rate_4xx"]),
                _percent(e["error_rate_5xx"]),
                f"{e['p50_ms']:.1f}",
                f"{e['p99_ms']:.1f}",
            ]
        )
    return format_table(rows) if edges else f"no requests in the last {window:g} s"


def print_top(mixer: str, window: float) -> None:
    print(top_table(mixer, window))


def watch_top(mixer: str, window: float, interval: float) -> None:
    """Redraw the table every `interval` seconds, as `watch` would, until Ctrl-C. A wrong
    address fails at once; a mixer lost later is shown in place of the table until it is back."""
    table = top_table(mixer, window)
    redraw = CLEAR_SCREEN if sys.stdout.isatty() else ""
    try:
        while True:
            heading = f"Every {interval:g}s: meshpilot top --mixer {mixer} --window {window:g}"
            print(f"{redraw}{heading}  {time.strftime('%H:%M:%S')}\n\n{table}\n", flush=True)
            time.sleep(interval)
            try:
                table = top_table(mixer, window)
            except MeshpilotError as err:
                table = f"error: {err}"
    except KeyboardInterrupt:
        return
