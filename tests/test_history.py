"""The mesh history's logic against the memory store: numbering, nothing new for the current
content, concurrent appends, rollbacks as new versions; and the table `meshpilot history`
prints. (On etcd: e2e/test_store_etcd.py; with replicas and Envoy: e2e/test_history.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshpilot.cli import main
from meshpilot.store import MemoryStore, MeshVersion, UnknownVersion, content_digest
from meshpilot.store.history import history_table
from meshpilot.store.memory import MemoryHistory

NOWHERE = "etcd://127.0.0.1:1"  # nothing listens there

ONE, TWO = b"mesh: one\n", b"mesh: two\n"


async def test_each_new_content_is_the_next_version_and_the_current_one() -> None:
    history = MemoryStore().history
    first, new_first = await history.append(ONE, "/m/mesh.yaml", "ann@a")
    second, new_second = await history.append(TWO, "/m/mesh.yaml", "bob@b")
    assert (first.number, new_first, second.number, new_second) == (1, True, 2, True)
    assert second.digest == content_digest(TWO) != first.digest
    assert await history.latest() == second
    assert [v.author for v in await history.versions()] == ["ann@a", "bob@b"]


async def test_the_current_content_again_stores_nothing() -> None:
    history = MemoryStore().history
    await history.append(ONE, "/m/mesh.yaml", "ann@a")
    again, new = await history.append(ONE, "/m/other.yaml", "bob@b")
    assert not new and again.number == 1 and again.author == "ann@a"
    assert len(await history.versions()) == 1


class Interleaving(MemoryHistory):
    """The memory history, letting every other append run between an append's reading of the
    history and its commit (as concurrent appends to etcd do)."""

    async def latest(self) -> MeshVersion | None:
        found = await super().latest()
        await asyncio.sleep(0)
        return found


async def test_concurrent_appends_take_distinct_numbers() -> None:
    history = Interleaving()
    contents = [f"mesh: m{i}\n".encode() for i in range(8)]
    stored = await asyncio.gather(*(history.append(c, "/m", "x") for c in contents))
    assert sorted(v.number for v, _ in stored) == list(range(1, 9))
    assert [v.number for v in await history.versions()] == list(range(1, 9))


async def test_a_rollback_is_a_new_version_with_the_old_content() -> None:
    history = MemoryStore().history
    await history.append(ONE, "/m/mesh.yaml", "ann@a")
    await history.append(TWO, "/m/mesh.yaml", "ann@a")
    back, new = await history.rollback(1, "bob@b")
    assert new and back.number == 3 and back.content == ONE and back.note == "rollback to 1"
    assert back.source == "/m/mesh.yaml" and back.author == "bob@b"
    _, again = await history.rollback(1, "bob@b")
    assert not again, "rolling back to the content that serves stores nothing"


async def test_a_rollback_to_an_unknown_version_names_what_there_is() -> None:
    history = MemoryStore().history
    await history.append(ONE, "/m", "ann@a")
    with pytest.raises(UnknownVersion, match=r"^no version 7 in the mesh history \(it holds "):
        await history.rollback(7, "bob@b")


async def test_current_follows_each_new_version() -> None:
    history = MemoryStore().history
    await history.append(ONE, "/m", "ann@a")
    current = history.current()
    assert (await anext(current)).content == ONE
    await history.rollback(1, "x")  # the current content: nothing new to follow
    await history.append(TWO, "/m", "ann@a")
    assert (await anext(current)).number == 2


async def test_the_table_marks_the_last_version_current() -> None:
    history = MemoryStore().history
    await history.append(ONE, "/m", "ann@a")
    await history.append(TWO, "/m", "bob@b", "apply")
    lines = history_table(await history.versions()).splitlines()
    assert lines[0].split() == ["VERSION", "WHEN", "WHO", "HASH", "STATUS", "DESCRIPTION"]
    assert lines[1].split()[0::2] == ["1", "ann@a", "superseded"]
    assert lines[2].split()[2:] == ["bob@b", content_digest(TWO), "current", "apply"]


def test_an_invalid_apply_prints_every_problem_before_asking_the_store(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("mesh: e2e\nservices:\n  reviews: {port: nine}\n")
    result = CliRunner().invoke(main, ["apply", str(mesh), "--store", NOWHERE])
    assert result.exit_code == 1
    expected = f"{mesh}:3:19: services.reviews.port: expected an integer, got string 'nine'\n"
    assert result.output == expected


def test_a_store_that_does_not_answer_is_one_line() -> None:
    result = CliRunner().invoke(main, ["history", "--store", NOWHERE])
    assert result.exit_code == 1
    assert result.output.startswith(f"error: etcd {NOWHERE} did not answer while reading the ")
    assert result.output.count("\n") == 1


def test_serve_needs_a_mesh_file_or_a_store() -> None:
    result = CliRunner().invoke(main, ["serve", "--insecure"])
    assert (result.exit_code, result.output) == (
        1,
        "error: give a mesh file, or a store (--store) whose history to serve\n",
    )
