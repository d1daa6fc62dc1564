"""Reading a mesh file: YAML text -> MeshSpec, or MeshInvalid listing every problem with its place.

The stages: `compose` (text -> YAML nodes with line:col marks, syntax problems), `nodes` (nodes ->
plain values, duplicate keys, merges; any place in the values back to its node), `schema`
(pydantic) and `references` (rules relating parts of the mesh), `messages` (pydantic's errors in
the mesh file's words). Every problem of every stage is reported at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from meshpilot.gc_pause import gc_paused
from meshpilot.mesh.compose import check_characters, compose, line_col
from meshpilot.mesh.diagnostics import ROOT, Diagnostic, Issue, MeshInvalid, at_start
from meshpilot.mesh.messages import describe, pydantic_issue
from meshpilot.mesh.nodes import Tree
from meshpilot.mesh.references import cross_checks
from meshpilot.mesh.schema import MeshSpec

# A mesh file is at most this big (bytes; $MESHPILOT_MAX_MESH_BYTES overrides): validating
# 11 MB takes seconds, and nothing legitimate comes near it.
MAX_MESH_BYTES = 16 * 1024 * 1024
MAX_MESH_BYTES_ENV = "MESHPILOT_MAX_MESH_BYTES"


def max_mesh_bytes() -> int:
    configured = os.environ.get(MAX_MESH_BYTES_ENV, "")
    return int(configured) if configured.isdigit() else MAX_MESH_BYTES


def read_mesh_file(path: Path) -> bytes:
    """The file's bytes; MeshInvalid if it cannot be read or is over the size limit (checked
    before reading, so a huge file costs nothing)."""
    filename = str(path)
    try:
        with path.open("rb") as file:
            size, limit = os.fstat(file.fileno()).st_size, max_mesh_bytes()
            if size > limit:
                message = (
                    f"the file is {size:,} bytes, over the limit of {limit:,} "
                    f"(${MAX_MESH_BYTES_ENV})"
                )
                raise MeshInvalid([at_start(filename, message)])
            return file.read(limit + 1)
    except OSError as err:
        reason = err.strerror or str(err)
        raise MeshInvalid([at_start(filename, f"cannot read the file: {reason}")]) from None


def load_mesh(path: Path) -> MeshSpec:
    """Read and validate the mesh file at `path`; any problem, even an unreadable file, is a
    MeshInvalid so that callers have one thing to catch."""
    filename = str(path)
    data = read_mesh_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        readable = data[: err.start].decode("utf-8")
        line, col = line_col(readable, len(readable))
        message = f"the file is not UTF-8 text (byte 0x{data[err.start]:02x} cannot be decoded)"
        raise MeshInvalid([Diagnostic(filename, line, col, ROOT, message)]) from None
    return parse_mesh(text, filename)


def parse_mesh(text: str, filename: str) -> MeshSpec:
    """Validate mesh file `text`; `filename` is only used in the problems reported."""
    return parse_mesh_values(text, filename)[0]


def parse_mesh_values(text: str, filename: str) -> tuple[MeshSpec, dict[str, Any]]:
    """`parse_mesh`, and the file's plain values (what `cross_checks` reads)."""
    try:
        with gc_paused():
            return _parse(text, filename)
    except MeshInvalid:
        raise
    except RecursionError:
        raise MeshInvalid([at_start(filename, "the file is nested too deeply")]) from None
    except Exception as err:  # `validate` promises problems, never a traceback
        message = f"internal error while validating ({type(err).__name__}: {err}); please report it"
        raise MeshInvalid([at_start(filename, message)]) from err


def _parse(text: str, filename: str) -> tuple[MeshSpec, dict[str, Any]]:
    check_characters(text, filename)
    root = compose(text, filename)
    if root is None:
        message = "the file is empty; a mesh file is a mapping that starts with 'mesh: NAME'"
        raise MeshInvalid([at_start(filename, message)])
    tree = Tree(root, filename, shared="&" in text)  # no anchor, no alias, nothing shared
    data = tree.value()
    if not isinstance(data, dict):
        message = f"the file must be a mapping of keys such as 'mesh', got {describe(data)}"
        raise MeshInvalid([*tree.problems, tree.diagnostic(Issue((), message))])
    spec, issues = _validate(data)
    base_dir = Path(filename).parent
    issues += cross_checks(data, base_dir)
    issues = [issue for issue in issues if issue.loc not in tree.unreadable]
    problems = tree.problems + [tree.diagnostic(issue) for issue in issues]
    if problems or spec is None:
        raise MeshInvalid(problems)
    return spec, data


def _validate(data: dict[str, Any]) -> tuple[MeshSpec | None, list[Issue]]:
    try:
        return MeshSpec.model_validate(data), []
    except ValidationError as err:
        return None, [pydantic_issue(error) for error in err.errors(include_url=False)]
