"""What a control plane records and says about saves of its mesh file: convergence measured from
when it saw the save, and an honest line when a save is rejected."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from pathlib import Path

import pytest

from meshpilot.admin.api import parse_utc_timestamp
from meshpilot.admin.client import ADMIN_API, get_json
from meshpilot.controlplane import ControlPlane
from tests.support.controlplane import running_control_plane
from tests.support.wait import wait_for_async

MESH = "mesh: demo\nservices: {reviews: {port: 9080}}\n"
CONVERGENCE = "meshpilot_config_convergence_seconds"
AN_HOUR_AGO = time.time() - 3600


def convergence(plane: ControlPlane) -> tuple[float, float]:
    """(samples, their sum in seconds) of the convergence histogram."""
    return plane.metrics.value(f"{CONVERGENCE}_count"), plane.metrics.value(f"{CONVERGENCE}_sum")


async def test_convergence_is_measured_from_when_the_save_was_seen_not_the_file_mtime(
    tmp_path: Path,
) -> None:
    async with running_control_plane(tmp_path, MESH) as plane:
        await wait_for_async(lambda: not plane.metrics.change_pending, 5)
        assert convergence(plane) == (0.0, 0.0)  # the load at start is no change
        new = tmp_path / "new.yaml"
        new.write_text(MESH.replace("9080", "9081"))
        os.utime(new, (AN_HOUR_AGO, AN_HOUR_AGO))
        new.replace(plane.mesh_path)
        await plane.reload()
        await wait_for_async(lambda: convergence(plane)[0] == 1.0, 5)
        assert convergence(plane)[1] < 5.0


async def test_a_bad_file_at_start_says_nothing_is_applied_yet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        async with running_control_plane(tmp_path, "mesh: demo\nservices: 3\n") as plane:
            assert plane.status.version is None
    assert "nothing is applied yet: sidecars wait for a valid file" in caplog.text
    assert "keeps serving" not in caplog.text


async def test_a_bad_save_later_names_the_version_that_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_control_plane(tmp_path, MESH) as plane:
        version = plane.status.version
        plane.mesh_path.write_text("mesh: demo\nservices: 3\n")
        with caplog.at_level(logging.ERROR):
            await plane.reload()
    assert f"version {version} keeps serving" in caplog.text


async def test_mesh_says_when_it_was_applied_as_an_iso_8601_utc_time(tmp_path: Path) -> None:
    before = time.time()
    async with running_control_plane(tmp_path, MESH) as plane:
        shown = await asyncio.to_thread(get_json, ADMIN_API, plane.admin.address, "/mesh")
    applied_at = shown["applied_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", applied_at), applied_at
    assert before - 0.001 <= parse_utc_timestamp(applied_at) <= time.time()
