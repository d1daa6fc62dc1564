"""Saves of the mesh file are debounced: a burst becomes a few applies ending on the last save,
and a constant stream of saves is still applied regularly."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshpilot.controlplane import ControlPlane
from meshpilot.mesh.watch import MAX_WAIT_MS
from tests.support.controlplane import running_control_plane
from tests.support.meshgen import mesh_yaml
from tests.support.wait import wait_for_async


def mesh_text(weight: int) -> str:
    """One synthetic service whose canary route sends `weight` % to v1."""
    return mesh_yaml(1, name="debounce", v1_weights={0: weight})


def version_of(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def applies(plane: ControlPlane) -> int:
    return plane.metrics.reloads("applied")


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with running_control_plane(tmp_path, mesh_text(100)) as control:
        yield control


async def wait_applied(plane: ControlPlane, text: str, timeout: float = 3.0) -> None:
    version = version_of(text)
    await wait_for_async(
        lambda: plane.status.version == version, timeout, 0.01, f"version {version} applied"
    )


async def test_a_burst_of_saves_is_applied_a_few_times_ending_on_the_last(
    plane: ControlPlane,
) -> None:
    before = applies(plane)
    for weight in range(0, 100, 5):  # 20 saves in about 100 ms
        plane.mesh_path.write_text(mesh_text(weight))
        await asyncio.sleep(0.005)  # the burst's pace, what the debounce is tested against
    await wait_applied(plane, mesh_text(95))
    assert 1 <= applies(plane) - before <= 3


async def test_a_constant_stream_of_saves_is_still_applied(plane: ControlPlane) -> None:
    before = applies(plane)
    deadline = time.monotonic() + 3 * MAX_WAIT_MS / 1000
    weight = 0
    while time.monotonic() < deadline:  # a save every 20 ms, never quiet for QUIET_MS (50 ms)
        weight = (weight + 1) % 100
        plane.mesh_path.write_text(mesh_text(weight))
        await asyncio.sleep(0.02)  # the stream's pace, what the debounce is tested against
    assert applies(plane) - before >= 2
    await wait_applied(plane, mesh_text(weight))
