"""The control plane's admin HTTP API (contract section 6)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from meshpilot.admin.console import console_routes
from meshpilot.admin.graph import DEFAULT_WINDOW_S, fetch_edges, service_graph
from meshpilot.admin.http import Handler, Reply
from meshpilot.store import Store
from meshpilot.translator.resources import decode
from meshpilot.xds.cache import SnapshotCache, Watch
from meshpilot.xds.metrics import XdsMetrics


@dataclass
class MeshStatus:
    """What `/mesh` reports: the applied file's version and time, and the last save's problems."""

    version: str | None = None
    applied_at: float | None = None
    problems: list[str] = field(default_factory=list)
    stored_version: int | None = None  # its number in the mesh history (`serve --store`)


def utc_timestamp(epoch: float | None) -> str | None:
    """ISO 8601 in UTC with milliseconds (`2026-12-04T11:20:03.123Z`), as people and tools read
    times; None stays None."""
    if epoch is None:
        return None
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc_timestamp(text: str) -> float:
    """The epoch seconds of a `utc_timestamp`."""
    return dt.datetime.fromisoformat(text).timestamp()


class ControlPlane(Protocol):
    """What the admin API reads of the control plane (it serves it, it does not run it)."""

    cache: SnapshotCache
    metrics: XdsMetrics
    status: MeshStatus
    mixer_metrics: str  # the mixer's HTTP address, for the console's service graph
    store: Store  # of the registry: a shared one is reported by /healthz


def proxy_json(watch: Watch) -> dict[str, Any]:
    proxy = watch.proxy
    return {
        "node_id": proxy.node_id,
        "service": proxy.service,
        "labels": dict(proxy.labels),
        "ip": proxy.ip,
        "protocol": watch.protocol,
        "proxyless": proxy.proxyless,
        "locality": str(proxy.locality) if proxy.locality is not None else None,
        "connected_at": watch.connected_at,
        "types": {type_url: state.as_json() for type_url, state in watch.types.items()},
    }


def config_dump(watch: Watch) -> dict[str, Any]:
    """The resources last sent to the proxy, per type, as Envoy JSON."""
    return {
        type_url: {
            "version": state.sent_version,
            "resources": [decode(r) for r in state.sent.resources.values()] if state.sent else [],
        }
        for type_url, state in watch.types.items()
    }


def healthz(store: Store) -> str:
    """`ok` while serving; with a shared store, a second line says whether it answers (while it
    does not, the last state it gave keeps serving)."""
    if not store.shared:
        return "ok\n"
    health = store.health
    if health.connected:
        return f"ok\nstore {store.url}: connected\n"
    since = utc_timestamp(health.since)
    return (
        f"ok\nstore {store.url}: unreachable since {since} ({health.error}); "
        "serving the last state it gave\n"
    )


def admin_routes(plane: ControlPlane) -> dict[str, Handler]:
    def proxies(_: dict[str, str]) -> Reply:
        return Reply.json([proxy_json(w) for w in plane.cache.watches])

    def dump(query: dict[str, str]) -> Reply:
        node = query.get("node")
        watch = next((w for w in plane.cache.watches if w.proxy.node_id == node), None)
        if watch is None:
            return Reply.json({"error": f"no connected proxy with node id {node!r}"}, 404)
        return Reply.json(config_dump(watch))

    def mesh(_: dict[str, str]) -> Reply:
        status = plane.status
        return Reply.json(
            {
                "version": status.version,
                "applied_at": utc_timestamp(status.applied_at),
                "problems": status.problems,
                "stored_version": status.stored_version,
            }
        )

    def metrics(_: dict[str, str]) -> Reply:
        return Reply(200, generate_latest(plane.metrics.registry), CONTENT_TYPE_LATEST)

    async def graph(query: dict[str, str]) -> Reply:
        window = _window(query.get("window"))
        if window is None:
            return Reply.json({"error": "window must be a number of seconds above 0"}, 400)
        edges, mixer_error = await fetch_edges(plane.mixer_metrics, window)
        proxies = [proxy_json(w) for w in plane.cache.watches]
        shown = service_graph(proxies, edges)
        mixer = {"address": plane.mixer_metrics, "error": mixer_error}
        return Reply.json({"window_s": window, "mixer": mixer, **shown})

    return {
        "/healthz": lambda _: Reply(200, healthz(plane.store).encode()),
        "/proxies": proxies,
        "/config_dump": dump,
        "/mesh": mesh,
        "/metrics": metrics,
        "/graph": graph,
        **console_routes(),
    }


def _window(text: str | None) -> float | None:
    """`?window=` in seconds: the default when absent, None when it is not a positive number."""
    if text is None:
        return DEFAULT_WINDOW_S
    try:
        window = float(text)
    except ValueError:
        return None
    return window if 0 < window < float("inf") else None
