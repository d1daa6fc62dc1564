"""The web console's data: `/graph` joins the connected proxies with the mixer's per-version
edges, and the console's assets stay readable without the admin token (they hold no data)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from meshpilot.admin.graph import call_depths, service_graph
from meshpilot.cli import main
from meshpilot.mixer import Mixer
from meshpilot.runner.addresses import free_port
from meshpilot.telemetry.entries import LogEntry
from tests.support.controlplane import LOCALHOST, running_control_plane

MESH = "mesh: demo\nservices: {reviews: {port: 9080}}\n"
TOKEN = "console-admin-token"


def proxy(service: str, version: str | None, node: str) -> dict[str, Any]:
    labels = {"version": version} if version else {}
    return {"node_id": node, "service": service, "labels": labels}


def top_edge(source: str, destination: str, version: str, **figures: float) -> dict[str, Any]:
    defaults = {"requests": 10, "rps": 1.0, "denied": 0, "error_rate": 0.0}
    defaults |= {"error_rate_4xx": 0.0, "error_rate_5xx": 0.0, "p99_ms": 5.0}
    edge = {"source": source, "destination": destination, "destination_version": version}
    return edge | defaults | figures


def test_services_are_nodes_with_their_versions_laid_out_by_call_depth() -> None:
    proxies = [
        proxy("productpage", "v1", "pp"),
        proxy("reviews", "v2", "r2"),
        proxy("reviews", "v1", "r1"),
        proxy("ratings", None, "ra"),
        proxy("details", "v1", "d1"),  # connected, never called: still a node
    ]
    edges = [
        top_edge("reviews", "ratings", "unknown", rps=0.5),
        top_edge("productpage", "reviews", "v2", rps=2.0, denied=3, error_rate=0.3),
        top_edge("unknown", "productpage", "v1"),  # a caller without a sidecar
    ]
    graph = service_graph(proxies, edges)
    assert [(n["service"], n["versions"], n["depth"], n["proxies"]) for n in graph["nodes"]] == [
        ("details", ["v1"], 0, 1),
        ("productpage", ["v1"], 1, 1),
        ("ratings", ["unknown"], 3, 1),
        ("reviews", ["v1", "v2"], 2, 2),
        ("unknown", [], 0, 0),
    ]
    assert [(e["source"], e["destination"], e["version"]) for e in graph["edges"]] == [
        ("productpage", "reviews", "v2"),
        ("reviews", "ratings", "unknown"),
        ("unknown", "productpage", "v1"),
    ]
    denied = graph["edges"][0]
    assert (denied["rps"], denied["denied"], denied["error_rate"]) == (2.0, 3, 0.3)


def test_a_called_version_without_a_proxy_is_still_shown() -> None:
    graph = service_graph([], [top_edge("frontend", "reviews", "v3")])
    assert [(n["service"], n["versions"]) for n in graph["nodes"]] == [
        ("frontend", []),
        ("reviews", ["v3"]),
    ]


def test_depth_is_the_nearest_callers_plus_one_and_cycles_end() -> None:
    calls = [("a", "b"), ("b", "c"), ("a", "c"), ("c", "c"), ("x", "y"), ("y", "x")]
    assert call_depths(["a", "b", "c", "x", "y", "lone"], calls) == {
        "a": 0,
        "lone": 0,
        "b": 1,
        "c": 1,  # called by a directly, not only through b
        "x": 0,  # only reachable through a cycle: starts a column of its own
        "y": 1,
    }


def entry(source: str, version: str, code: int, at: float, ms: float) -> LogEntry:
    return LogEntry(at, "source", source, "reviews", version, code, ms / 1000, "GET", "/", "", "")


@pytest.fixture
async def mixer(tmp_path: Path) -> AsyncIterator[Mixer]:
    """The mixer's HTTP API as `meshpilot mixer` serves it (its workers are not needed)."""
    mesh = tmp_path / "mixer-mesh.yaml"
    mesh.write_text(MESH)
    mixer = Mixer(mesh, f"{LOCALHOST}:0", f"{LOCALHOST}:{free_port(LOCALHOST)}", workers=1)
    await mixer.http.start()
    try:
        yield mixer
    finally:
        await mixer.http.stop()


def get(url: str, token: str | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


async def get_json(url: str, token: str | None = None) -> tuple[int, Any]:
    status, _, body = await asyncio.to_thread(get, url, token)
    return status, json.loads(body)


async def test_graph_shows_the_mixers_figures_per_callee_version(
    tmp_path: Path, mixer: Mixer
) -> None:
    now = time.time()
    mixer.store.add(
        [entry("frontend", "v1", 200, now - 1, 4) for _ in range(8)]
        + [entry("frontend", "v2", 403, now - 1, 1) for _ in range(2)]
        + [entry("frontend", "v2", 200, now - 1, 30) for _ in range(2)]
        + [entry("frontend", "v1", 200, now - 100, 4)]  # outside the window
    )
    async with running_control_plane(tmp_path, MESH, mixer_metrics=mixer.http.address) as plane:
        status, graph = await get_json(f"http://{plane.admin.address}/graph?window=10")
    assert status == 200
    assert graph["mixer"] == {"address": mixer.http.address, "error": None}
    assert graph["window_s"] == 10
    assert [(n["service"], n["versions"], n["depth"]) for n in graph["nodes"]] == [
        ("frontend", [], 0),
        ("reviews", ["v1", "v2"], 1),
    ]
    v1, v2 = graph["edges"]
    assert (v1["version"], v1["requests"], v1["rps"], v1["denied"]) == ("v1", 8, 0.8, 0)
    assert (v2["version"], v2["requests"], v2["denied"], v2["error_rate_4xx"]) == ("v2", 4, 2, 0.5)
    assert v2["p99_ms"] == pytest.approx(30)


async def test_a_mixer_that_is_down_is_a_message_not_an_error(tmp_path: Path) -> None:
    nobody = f"{LOCALHOST}:{free_port(LOCALHOST)}"
    async with running_control_plane(tmp_path, MESH, mixer_metrics=nobody) as plane:
        status, graph = await get_json(f"http://{plane.admin.address}/graph")
        bad_status, bad = await get_json(f"http://{plane.admin.address}/graph?window=-1")
    assert status == 200 and graph["edges"] == [] and graph["nodes"] == []
    assert graph["mixer"]["error"] == (
        f"cannot reach the mixer's HTTP API at {nobody}: connection refused"
    )
    assert bad_status == 400 and "window" in bad["error"]


async def test_the_console_is_public_and_its_data_needs_the_token(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path, MESH, admin_token=TOKEN) as plane:
        base = f"http://{plane.admin.address}"
        page = await asyncio.to_thread(get, f"{base}/ui")
        script = await asyncio.to_thread(get, f"{base}/ui/console.js")
        graph_without = await asyncio.to_thread(get, f"{base}/graph")
        graph_with = await asyncio.to_thread(get, f"{base}/graph", TOKEN)
    status, headers, body = page
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script src="/ui/console.js"' in body and b"reviews" not in body
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert script[0] == 200 and script[1]["Content-Type"].startswith("text/javascript")
    assert b"Authorization" in script[2]
    assert graph_without[0] == 401
    assert graph_with[0] == 200


def test_serve_refuses_a_mixer_metrics_address_it_could_not_use(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(MESH)
    argv = ["serve", str(mesh), "--insecure", "--mixer-metrics", "https://127.0.0.1:18082"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: --mixer-metrics https://127.0.0.1:18082: the mixer's HTTP API speaks plain "
        "http://\n"
    )
