"""Saving the mesh file changes live traffic within a second, with no failed request."""

from __future__ import annotations

import time
from collections.abc import Callable

from harness.client import LoadGenerator, Result
from harness.mesh import MeshEnv
from harness.wait import wait_for
from meshes import live_edit, reviews_mesh, start_reviews_mesh

APPLY_DEADLINE = 1.0  # contract: every sidecar has the new configuration within 1 s of a save


def served_by(version: str) -> Callable[[Result], bool]:
    return lambda r: r.ok and isinstance(r.body, dict) and r.body["version"] == version


def test_a_weight_change_applies_within_a_second_with_zero_failed_requests(
    mesh_env: MeshEnv,
) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0))
    load, saved, effective = live_edit(mesh_env, page, reviews_mesh(0, 100), served_by("v2"), 30)
    assert all(served_by("v1")(r) for r in load.results if r.sent_at < saved)
    print(f"weight change effective {effective - saved:.3f} s after the save")
    assert effective - saved < APPLY_DEADLINE, f"took {effective - saved:.3f} s"


def test_an_invalid_save_keeps_the_last_good_config_until_a_good_save(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0))
    control_plane = mesh_env.control_plane
    assert control_plane is not None
    applied = control_plane.mesh()["version"]
    with LoadGenerator(page.client(), "reviews") as load:
        mesh_env.write_mesh(reviews_mesh(60, 30))
        problems = wait_for(lambda: control_plane.mesh()["problems"], 5, message="problems")
        load.wait_for_results(50)
        rejected_until = time.monotonic()
        mesh_env.write_mesh(reviews_mesh(0, 100))
        load.wait_effective(served_by("v2"))
    assert problems == [
        f"{control_plane.mesh_path}:12:13: services.reviews.routes[0].to: "
        "weights add up to 90; they must add up to 100"
    ]
    assert load.failures() == [], load.summary()
    before: list[Result] = [r for r in load.results if r.sent_at < rejected_until]
    assert before and all(served_by("v1")(r) for r in before)
    assert control_plane.mesh()["version"] != applied
    assert control_plane.mesh()["problems"] == []
