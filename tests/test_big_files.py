"""Big mesh files (issue #13 item 6): a size limit with a clear error, and validation off the
event loop, so that the control plane keeps serving ADS and its admin API during a reload."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshpilot.cli import main
from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import MAX_MESH_BYTES, MAX_MESH_BYTES_ENV, load_mesh, parse_mesh
from meshpilot.model.proxies import Proxy
from meshpilot.translator.build import build_ir
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.sotw.stream import new_types
from meshpilot.xds.types import BY_SHORT, PUSH_ORDER
from tests.support import meshgen
from tests.support.client import AdsClient, sidecar_node
from tests.support.controlplane import running_control_plane
from tests.support.wait import wait_for_async

MESH = "mesh: big\nservices:\n  reviews: {port: 9080}\n"
# About 3 MB the schema refuses key by key: seconds of validation.
HUGE = MESH + "extra:\n" + "".join(f"  - {{k{i}: value-{i}, n: {i}}}\n" for i in range(90_000))


def test_the_default_limit_is_16_mib() -> None:
    assert MAX_MESH_BYTES == 16 * 1024 * 1024


def test_a_file_over_the_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_MESH_BYTES_ENV, "1000")
    path = tmp_path / "mesh.yaml"
    path.write_text(MESH + "#" * 2000 + "\n")
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(path)
    (problem,) = raised.value.problems
    assert problem.format() == (
        f"{path}:1:1: <root>: the file is 2,045 bytes, over the limit of 1,000 "
        f"(${MAX_MESH_BYTES_ENV})"
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1 and "over the limit" in result.output


class Prober:
    """Asks `/healthz` over and over from a thread; the slowest answer shows how long the
    control plane's event loop was blocked."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(f"http://{self.address}/healthz", timeout=30) as reply:
                assert reply.status == 200
            self.latencies.append(time.perf_counter() - started)
            time.sleep(0.02)

    async def __aenter__(self) -> Prober:
        self._thread.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        """Joined off the loop: a probe under way waits for this loop to answer it."""
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 30)


async def test_the_control_plane_keeps_serving_while_it_validates_a_big_file(
    tmp_path: Path,
) -> None:
    async with running_control_plane(tmp_path, MESH) as plane:
        plane.mesh_path.write_text(HUGE)
        proxy = Proxy("reviews~127.0.0.1", "reviews", "127.0.0.1", 8080, ())
        async with Prober(plane.admin.address) as prober:
            await wait_for_async(lambda: len(prober.latencies) >= 3, message="probes")
            started = time.perf_counter()
            reloading = asyncio.create_task(plane.reload())
            async with AdsClient(plane.ads.address, sidecar_node(proxy)) as client:
                assert (await client.fetch(BY_SHORT["cds"].url)).resources
            await reloading
            took = time.perf_counter() - started
        # A blocked loop would make one probe wait about as long as the whole validation.
        assert took > 0.3
        assert max(prober.latencies) < took / 2, (max(prober.latencies), took)
        assert "unknown key 'extra'" in plane.status.problems[0]


async def test_translation_runs_while_the_event_loop_keeps_serving() -> None:
    """A mesh of 4,000 services takes a good part of a second to translate; meanwhile the loop
    wakes up every few milliseconds (translated on the loop, one gap would be that long)."""
    mesh = build_ir(parse_mesh(meshgen.mesh_yaml(4000), "big.yaml"), Path("."))
    cache = SnapshotCache()
    cache.connect(Proxy("svc-0~127.0.0.1", "svc-0", "127.0.0.1", 8080, ()), new_types(PUSH_ORDER))
    gaps: list[float] = []

    async def ticking() -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            gaps.append(time.perf_counter() - started)

    ticker = asyncio.create_task(ticking())
    try:
        await wait_for_async(lambda: len(gaps) >= 3, message="ticks")
        started = time.perf_counter()
        await cache.apply_mesh(mesh)
        took = time.perf_counter() - started
    finally:
        ticker.cancel()
    assert cache.mesh is mesh
    assert took > 0.2
    assert max(gaps) < took / 2, (max(gaps), took)
