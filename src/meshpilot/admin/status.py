"""`meshpilot status`: a readable table of connected proxies and their sync state."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from meshpilot.errors import MeshpilotError
from meshpilot.xds.types import PUSH_ORDER, short_name


def fetch_proxies(admin: str, token: str | None = None) -> list[dict[str, Any]]:
    request = urllib.request.Request(f"http://{admin}/proxies")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return list(json.load(reply))
    except urllib.error.HTTPError as err:
        err.close()
        raise MeshpilotError(f"the control plane admin API at {admin} answered {err}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise MeshpilotError(f"cannot reach the control plane admin API at {admin}: {err}") from err


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _type_cell(state: dict[str, Any] | None) -> str:
    if state is None:
        return "-"  # not served to this proxy (a proxyless client's route scopes)
    version = state.get("acked_version") or state.get("sent_version") or "-"
    return f"{state['status']} {version[:8]}"


def status_rows(proxies: list[dict[str, Any]], now: float) -> list[list[str]]:
    header = [
        "SERVICE",
        "IP",
        "NODE",
        "XDS",
        *(short_name(t).upper() for t in PUSH_ORDER),
        "AGE",
        "ERROR",
    ]
    rows = [header]
    for proxy in sorted(proxies, key=lambda p: (p["service"], p["ip"], p["node_id"])):
        types = proxy["types"]
        errors = [f"{short_name(t)}: {types[t]['error']}" for t in types if types[t].get("error")]
        rows.append(
            [
                proxy["service"],
                proxy["ip"],
                proxy["node_id"],
                proxy.get("protocol", "sotw"),
                *(_type_cell(types.get(t)) for t in PUSH_ORDER),
                _age(now - proxy["connected_at"]),
                "; ".join(errors),
            ]
        )
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def all_synced(proxies: list[dict[str, Any]]) -> bool:
    return all(state["status"] == "SYNCED" for p in proxies for state in p["types"].values())


def print_status(admin: str, token: str | None = None) -> int:
    """Print the table; exit status 0 only when every proxy is SYNCED for every type."""
    proxies = fetch_proxies(admin, token)
    if not proxies:
        print("no proxies connected")
        return 0
    print(format_table(status_rows(proxies, time.time())))
    return 0 if all_synced(proxies) else 1
