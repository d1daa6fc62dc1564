"""Reading a saved mesh file again (`MeshReader`) gives what reading it from scratch gives:
the same spec, or the same problems, whatever the edit; and only changed services are read."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.incremental import MeshReader, cut_services
from meshpilot.mesh.load import parse_mesh
from meshpilot.mesh.schema import MeshSpec
from tests.support.meshgen import mesh_yaml

GOLDEN = Path(__file__).parent / "golden"
MESHES = sorted(GOLDEN.glob("*/mesh.yaml"))


def outcome(read: object, text: str, filename: str) -> MeshSpec | list[str]:
    """The spec, or the problems as text: what a reader (or parse_mesh) makes of `text`."""
    try:
        if isinstance(read, MeshReader):
            return read.parse(text, filename)
        return parse_mesh(text, filename)
    except MeshInvalid as invalid:
        return [str(problem) for problem in invalid.problems]


def primed(text: str, filename: str = "mesh.yaml") -> MeshReader:
    reader = MeshReader()
    reader.parse(text, filename)
    return reader


def test_an_edited_service_is_read_alone_and_the_others_are_kept() -> None:
    before = mesh_yaml(50, name="m")
    reader = primed(before)
    first = reader.parse(before, "mesh.yaml")
    edited = mesh_yaml(50, name="m", v1_weights={7: 30})
    spec = reader.parse(edited, "mesh.yaml")
    assert spec == parse_mesh(edited, "mesh.yaml")
    assert reader.blocks_read == 1  # svc-7's
    assert spec.services["svc-8"] is first.services["svc-8"]
    assert spec.services["svc-7"] != first.services["svc-7"]


def test_services_added_removed_and_reordered_read_as_from_scratch() -> None:
    reader = primed(mesh_yaml(20, name="m"))
    for text in (
        mesh_yaml(20, name="m", added=[("extra", 7001)]),
        mesh_yaml(12, name="m"),
        reordered(mesh_yaml(12, name="m")),
    ):
        assert reader.parse(text, "mesh.yaml") == parse_mesh(text, "mesh.yaml")
        assert reader.blocks_read <= 1


def reordered(text: str) -> str:
    cut = cut_services(text)
    assert cut is not None
    return cut.head + "".join(block for _, block in reversed(cut.blocks)) + cut.tail


def test_a_change_outside_the_services_reads_the_whole_file() -> None:
    reader = primed(mesh_yaml(5, name="m"))
    renamed = mesh_yaml(5, name="other")
    assert reader.parse(renamed, "mesh.yaml").mesh == "other"
    assert reader.blocks_read is None  # the full path


def test_a_bad_edit_is_reported_as_from_scratch_and_the_last_good_file_kept() -> None:
    good = mesh_yaml(5, name="m")
    reader = primed(good)
    bad = good.replace("weight: 90", "weight: 190", 1)
    assert outcome(reader, bad, "mesh.yaml") == outcome(None, bad, "mesh.yaml")
    assert isinstance(outcome(reader, bad, "mesh.yaml"), list)
    fixed = mesh_yaml(5, name="m", v1_weights={0: 80})
    assert reader.parse(fixed, "mesh.yaml") == parse_mesh(fixed, "mesh.yaml")
    assert reader.blocks_read == 1


@pytest.mark.parametrize("path", MESHES, ids=lambda p: p.parent.name)
def test_any_edit_of_any_mesh_reads_as_from_scratch(path: Path) -> None:
    """Random edits of each golden mesh (lines dropped, doubled, re-indented, changed), each
    read by a reader primed with the file: the same spec or the same problems as parse_mesh."""
    text, filename = path.read_text(), str(path)
    rng = random.Random(path.parent.name)
    incremental = 0
    for _ in range(80):
        edited = mutate(text, rng) if rng.random() < 0.5 else mutate_services(text, rng)
        reader = primed(text, filename)
        assert outcome(reader, edited, filename) == outcome(None, edited, filename), edited
        incremental += reader.blocks_read is not None
    assert incremental >= 5  # the edits exercised the path that reads services alone


def mutate_services(text: str, rng: random.Random) -> str:
    """Edits that keep the file's shape: services dropped, copied under a new name, swapped;
    a comment, a blank line or another digit inside a service."""
    cut = cut_services(text)
    assert cut is not None
    blocks = [block for _, block in cut.blocks]
    i = rng.randrange(len(blocks))
    kind = rng.randrange(5)
    if kind == 0 and len(blocks) > 1:
        del blocks[i]
    elif kind == 1:
        name = cut.blocks[i][0]
        blocks.insert(i, blocks[i].replace(f"{name}:", f"{name}-copy:", 1))
    elif kind == 2:
        j = rng.randrange(len(blocks))
        blocks[i], blocks[j] = blocks[j], blocks[i]
    else:
        lines = blocks[i].splitlines(keepends=True)
        k = rng.randrange(1, len(lines) + 1)
        if kind == 3:
            lines.insert(k, rng.choice(["\n", "# note\n", "      # note\n"]))
        else:
            k -= 1
            digits = [n for n, c in enumerate(lines[k]) if c.isdigit()]
            if digits:
                n = rng.choice(digits)
                lines[k] = lines[k][:n] + str(rng.randrange(10)) + lines[k][n + 1 :]
        blocks[i] = "".join(lines)
    return cut.head + "".join(blocks) + cut.tail


def mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        line = lines[i]
        kind = rng.randrange(7)
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, line)
        elif kind == 2:
            lines[i] = " " * rng.choice([1, 2, 4]) + line
        elif kind == 3:
            lines[i] = line[rng.choice([1, 2]) :] if line.startswith("  ") else line
        elif kind == 4:
            lines[i] = line.replace(": ", ": {", 1) if ": " in line else line + "[\n"
        elif kind == 5:
            lines[i] = "".join(
                rng.choice("ab1 -:#&*|\t'\"") if c.isalnum() and rng.random() < 0.3 else c
                for c in line
            )
        else:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        if not lines:
            break
    return "".join(lines)
