"""`meshpilot status`: a readable table of connected proxies and their sync state."""

from __future__ import annotations

import time
from typing import Any

from meshpilot.admin.client import ADMIN_API, get_json
from meshpilot.wording import serving
from meshpilot.xds.types import PUSH_ORDER, short_name


def fetch_proxies(admin: str, token: str | None = None) -> list[dict[str, Any]]:
    return list(get_json(ADMIN_API, admin, "/proxies", token=token))


def rejected_save(mesh: dict[str, Any]) -> list[str]:
    """The last save's problems (as `/mesh` gives them) and what serves instead; none if it
    was good."""
    if not mesh["problems"]:
        return []
    return [
        f"the last save of the mesh file was rejected; {serving(mesh['version'])}:",
        *(f"  {problem}" for problem in mesh["problems"]),
        "",
    ]


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
    """Print the last save's problems, if any, and the table; exit status 0 only when every
    proxy is SYNCED for every type (a rejected save changes no proxy's state)."""
    proxies = fetch_proxies(admin, token)
    for line in rejected_save(get_json(ADMIN_API, admin, "/mesh", token=token)):
        print(line)
    if not proxies:
        print("no proxies connected")
        return 0
    print(format_table(status_rows(proxies, time.time())))
    return 0 if all_synced(proxies) else 1
