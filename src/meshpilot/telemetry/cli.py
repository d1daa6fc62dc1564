"""`meshpilot logs` and `meshpilot top`: read the mixer's store over HTTP and print tables."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from meshpilot.admin.status import format_table
from meshpilot.errors import MeshpilotError


def fetch(mixer: str, endpoint: str, **query: object) -> Any:
    params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
    url = f"http://{mixer}{endpoint}?{params}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return json.load(reply)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise MeshpilotError(f"cannot reach the mixer at {mixer}: {err}") from err


def print_logs(
    mixer: str, service: str | None, status: int | None, path: str | None, limit: int
) -> None:
    entries = fetch(mixer, "/logs", service=service, status=status, path=path, limit=limit)
    rows = [
        [
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
    ]
    for e in entries:
        rows.append(
            [
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
        )
    print(format_table(rows) if entries else "no requests recorded")


def print_top(mixer: str, window: float) -> None:
    edges = fetch(mixer, "/top", window=window)
    rows = [["SOURCE", "DESTINATION", "REQUESTS", "RPS", "ERRORS", "P50 MS", "P99 MS"]]
    for e in edges:
        rows.append(
            [
                e["source"],
                e["destination"],
                str(e["requests"]),
                f"{e['rps']:.2f}",
                f"{e['error_rate'] * 100:.1f}%",
                f"{e['p50_ms']:.1f}",
                f"{e['p99_ms']:.1f}",
            ]
        )
    print(format_table(rows) if edges else f"no requests in the last {window:g} s")
