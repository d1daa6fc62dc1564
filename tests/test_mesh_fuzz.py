"""Bad input never crashes the loader: anything it cannot accept comes back as MeshInvalid with at
least one placed problem (the contract: `validate` never shows a traceback)."""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpilot.mesh import compose
from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import load_mesh, parse_mesh
from meshpilot.mesh.schema import MeshSpec
from meshpilot.translator.build import build_ir

FIXTURE = Path(__file__).parent / "fixtures" / "valid-mesh.yaml"
VALID = FIXTURE.read_text()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces that make YAML interesting: structure, anchors, tags, quoting, and the mesh's own keys.
TOKENS = [
    "\n", "  ", "    ", "\t", ": ", ":", "- ", "-", "{", "}", "[", "]", ", ", "#", "?", "---",
    "...", "&a ", "*a", "&b ", "*b", "<<: ", "!!int ", "!!str ", "!!binary ", "!x ", "'", '"',
    "|", ">", "~", "null", "true", "on", "0x1F", "1e9", "-1", "0", "100", "65536", "1.5",
    "2s", "250ms", "-1s", "2", "mesh", "services", "defaults", "port", "routes", "name", "to",
    "subset", "weight", "subsets", "v1", "v2", "match", "path", "path_prefix", "/", "headers",
    "methods", "GET", "get", "retries", "attempts", "timeout", "per_try_timeout", "5xx",
    "endpoints", "address", "labels", "version", "reviews", "Reviews", "protocol", "http",
    "é", "\u2028", "\x85", "\\", "%", "@", "`",
]  # fmt: skip


def assert_handled(run: Callable[[], MeshSpec]) -> None:
    """`run` gives a spec that builds, or raises MeshInvalid with placed, one-line problems."""
    try:
        spec = run()
    except MeshInvalid as invalid:
        assert invalid.problems
        for problem in invalid.problems:
            assert problem.line >= 1
            assert problem.col >= 1
            assert problem.path
            assert not problem.message.startswith("internal error while validating")
            assert "\n" not in problem.format()
        return
    build_ir(spec)


@FUZZ
@given(st.text())
def test_any_text(text: str) -> None:
    assert_handled(lambda: parse_mesh(text, "fuzz.yaml"))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_yaml_like_text(text: str) -> None:
    assert_handled(lambda: parse_mesh(text, "fuzz.yaml"))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_yaml_like_text_with_the_python_parser(text: str) -> None:
    """The fallback when PyYAML lacks libyaml: its problems are reworded too, never a crash."""
    with mock.patch.object(compose, "LOADER", compose.PythonLoader):
        assert_handled(lambda: parse_mesh(text, "fuzz.yaml"))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes_in_a_file(fuzz_dir: Path, data: bytes) -> None:
    path = fuzz_dir / "mesh.yaml"
    path.write_bytes(data)
    assert_handled(lambda: load_mesh(path))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """The valid fixture with a few random edits: cuts, insertions, moved lines."""
    text = VALID
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["cut", "insert", "duplicate-line", "drop-line", "indent"]))
        at = draw(st.integers(0, len(text)))
        lines = text.splitlines(keepends=True)
        line = draw(st.integers(0, len(lines) - 1))
        if edit == "cut":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif edit == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS)) + text[at:]
        elif edit == "duplicate-line":
            text = "".join([*lines[: line + 1], lines[line], *lines[line + 1 :]])
        elif edit == "drop-line":
            text = "".join(lines[:line] + lines[line + 1 :])
        else:
            text = "".join([*lines[:line], " " + lines[line], *lines[line + 1 :]])
    return text


@FUZZ
@given(mutated())
def test_mutations_of_a_valid_file(text: str) -> None:
    assert_handled(lambda: parse_mesh(text, "fuzz.yaml"))


VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(string.printable, max_size=8)
    | st.sampled_from(["2s", "v1", "GET", "/", "5xx", "http", "-1s", "subset"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(string.ascii_lowercase + "_", max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += _paths(value, (*prefix, i))
    return found


@FUZZ
@given(st.data())
def test_random_values_anywhere_in_a_valid_file(data: st.DataObject) -> None:
    tree = yaml.safe_load(VALID)
    path = data.draw(st.sampled_from(_paths(tree)[1:]))
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = data.draw(VALUES)
    assert_handled(lambda: parse_mesh(yaml.safe_dump(tree), "fuzz.yaml"))


def test_the_valid_file_itself_passes() -> None:
    assert_handled(lambda: load_mesh(FIXTURE))
    assert isinstance(load_mesh(FIXTURE), MeshSpec)
