"""The web console's service graph (`/graph`): services and their versions as nodes, caller ->
callee (version) edges with the mixer's figures, and each service's call depth for the layout.

The control plane knows who is connected (proxies), the mixer knows who called whom (its access
log store, `/top?by=version`): the graph joins the two, so an idle service still shows, and a
caller without a sidecar (`unknown`) appears as soon as it calls."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from meshpilot.admin.client import MIXER_HTTP, get_json
from meshpilot.errors import MeshpilotError
from meshpilot.telemetry.entries import UNKNOWN

MIXER_METRICS = replace(MIXER_HTTP, option="--mixer-metrics")  # as `serve` names it
DEFAULT_WINDOW_S = 10.0
_FIGURES = ("requests", "rps", "denied", "error_rate", "error_rate_4xx", "error_rate_5xx", "p99_ms")


async def fetch_edges(mixer: str, window_s: float) -> tuple[list[dict[str, Any]], str | None]:
    """The mixer's per-version edges, or none and why (a mixer that is down is not an error of
    the control plane: the console says so and keeps polling)."""
    query = {"window": window_s, "by": "version"}
    try:
        edges = await asyncio.to_thread(get_json, MIXER_METRICS, mixer, "/top", query=query)
    except MeshpilotError as err:
        return [], str(err)
    return list(edges), None


def service_graph(
    proxies: Iterable[dict[str, Any]], edges: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """Nodes (service, versions, depth, proxies) and edges, sorted, from /proxies and /top."""
    versions: dict[str, set[str]] = defaultdict(set)
    connected: dict[str, int] = defaultdict(int)
    for proxy in proxies:
        connected[proxy["service"]] += 1
        versions[proxy["service"]].add(proxy["labels"].get("version") or UNKNOWN)
    graph_edges = [_edge(e) for e in edges]
    for edge in graph_edges:
        versions.setdefault(edge["source"], set())  # a caller is a node, versions unknown
        versions[edge["destination"]].add(edge["version"])
    depths = call_depths(versions, [(e["source"], e["destination"]) for e in graph_edges])
    nodes = [
        {
            "service": service,
            "versions": sorted(versions[service]),
            "depth": depths[service],
            "proxies": connected[service],
        }
        for service in sorted(versions)
    ]
    return {"nodes": nodes, "edges": sorted(graph_edges, key=_edge_key)}


def _edge(top: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": top["source"],
        "destination": top["destination"],
        "version": top.get("destination_version") or UNKNOWN,
        **{name: top[name] for name in _FIGURES},
    }


def _edge_key(edge: dict[str, Any]) -> tuple[str, str, str]:
    return edge["source"], edge["destination"], edge["version"]


def call_depths(services: Iterable[str], calls: list[tuple[str, str]]) -> dict[str, int]:
    """Each service's column, left to right: 0 for those nobody calls, else one more than its
    nearest caller's (breadth-first, so a cycle does not push a service ever further right).
    A service only reachable through a cycle starts a column 0 of its own."""
    callees: dict[str, set[str]] = defaultdict(set)
    for source, destination in calls:
        if source != destination:
            callees[source].add(destination)
    called = set().union(*callees.values())
    ordered = sorted(services)
    depths: dict[str, int] = {}
    _spread(depths, callees, [s for s in ordered if s not in called])
    for service in ordered:
        if service not in depths:
            _spread(depths, callees, [service])
    return depths


def _spread(depths: dict[str, int], callees: dict[str, set[str]], starts: list[str]) -> None:
    depths.update(dict.fromkeys(starts, 0))
    queue = deque(starts)
    while queue:
        service = queue.popleft()
        for callee in sorted(callees[service]):
            if callee not in depths:
                depths[callee] = depths[service] + 1
                queue.append(callee)
