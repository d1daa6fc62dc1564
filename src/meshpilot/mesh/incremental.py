"""Reading a saved mesh file again: only the services whose text changed are read again.

A save usually changes one service of many. Composing a 1,000-service file and turning its
nodes into values costs ~90 ms; the same for one service, well under one. So the file is cut by
its text into what comes before the services, one block per service and what comes after. When
the parts around the services are as in the last good file, only blocks not seen in it are
composed and validated; the others keep their values and their checked ServiceSpec. The whole
mesh is then validated and cross-checked as always (files, references, ports).

Anything the cut cannot be sure of (an anchor, a tab in an indent, a line that is neither a
service nor inside one, a block that does not read as exactly its service) and any problem at
all take the full path (`load.parse_mesh_values`), so problems are reported exactly as there.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from meshpilot.gc_pause import gc_paused
from meshpilot.mesh.compose import check_characters, compose
from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import parse_mesh_values
from meshpilot.mesh.nodes import Tree
from meshpilot.mesh.references import cross_checks
from meshpilot.mesh.schema import MeshSpec, ServiceSpec

# Past this many new service blocks, the whole file is read at once instead.
MOST_BLOCKS_READ = 64
_SERVICES_LINE = re.compile(r"services:[ ]*(#.*)?\n?")
_SERVICE_KEY = re.compile(r"( +)([A-Za-z0-9_][A-Za-z0-9_.-]*):( |\n|$)")


class _Cut(NamedTuple):
    head: str  # up to the first service (the `services:` line, comments and blank lines)
    blocks: tuple[tuple[str, str], ...]  # (service name, its lines)
    tail: str  # from the first top-level line after the services


class _Known(NamedTuple):
    """A service block read before: its values (for cross-checks) and its checked spec."""

    values: Any
    spec: ServiceSpec


@dataclass(frozen=True)
class _Last:
    """The last good file, as the cut sees it."""

    head: str
    tail: str
    data: dict[str, Any]  # its values
    blocks: dict[str, _Known]  # by block text


class MeshReader:
    """Reads successive versions of one mesh file, each as `parse_mesh` would."""

    def __init__(self) -> None:
        self._last: _Last | None = None
        self._lock = threading.Lock()  # saves are read one at a time, in order
        self.blocks_read: int | None = None  # by the last parse (None: it read the whole file)

    def parse(self, text: str, filename: str) -> MeshSpec:
        """The file's spec; MeshInvalid with every problem, as `parse_mesh` reports them."""
        with self._lock:
            self.blocks_read = None
            cut = cut_services(text)
            spec = self._changed_services(text, filename, cut) if cut is not None else None
            if spec is not None:
                return spec
            spec, data = parse_mesh_values(text, filename)
            self._remember(cut, data, spec)
            return spec

    def _changed_services(self, text: str, filename: str, cut: _Cut) -> MeshSpec | None:
        """The spec read from the blocks that changed, None to take the full path."""
        last = self._last
        if last is None or cut.head != last.head or cut.tail != last.tail:
            return None
        if sum(block not in last.blocks for _, block in cut.blocks) > MOST_BLOCKS_READ:
            return None  # many services are new: one full read is quicker
        with gc_paused():
            try:
                check_characters(text, filename)
            except MeshInvalid:
                return None
            blocks, read = {}, 0
            for name, block in cut.blocks:
                known = last.blocks.get(block)
                if known is None:
                    known, read = _read_block(name, block, filename), read + 1
                if known is None or name in blocks:  # unreadable alone, or a duplicate name
                    return None
                blocks[name] = known
            data = {**last.data, "services": {k: b.values for k, b in blocks.items()}}
            if cross_checks(data, Path(filename).parent):
                return None
            try:
                spec = MeshSpec.model_validate({**data, "services": _specs(blocks)})
            except ValidationError:
                return None
        self._remember(cut, data, spec, blocks)
        self.blocks_read = read
        return spec

    def _remember(
        self,
        cut: _Cut | None,
        data: dict[str, Any],
        spec: MeshSpec,
        blocks: dict[str, _Known] | None = None,
    ) -> None:
        """Keep the file's parts for the next save (nothing if it did not cut as it read)."""
        if blocks is None and cut is not None:
            services = data.get("services")
            names = [name for name, _ in cut.blocks]
            unique = len(set(names)) == len(names)
            if isinstance(services, dict) and unique and set(names) == set(services):
                blocks = {n: _Known(services[n], spec.services[n]) for n in names}
        if cut is None or blocks is None:
            self._last = None
            return
        known = {block: blocks[name] for name, block in cut.blocks}
        self._last = _Last(cut.head, cut.tail, data, known)


def _specs(blocks: dict[str, _Known]) -> dict[str, ServiceSpec]:
    return {name: known.spec for name, known in blocks.items()}


def _read_block(name: str, block: str, filename: str) -> _Known | None:
    """A service's block read alone; None if it is not exactly that service, or has a problem
    (the full path then reports it, in place)."""
    try:
        root = compose("services:\n" + block, filename)
    except MeshInvalid:
        return None
    if root is None:
        return None
    tree = Tree(root, filename, shared=False)
    try:
        values = tree.value()
    except MeshInvalid:
        return None
    services = values.get("services") if isinstance(values, dict) else None
    if tree.problems or not isinstance(services, dict) or list(services) != [name]:
        return None
    try:
        return _Known(services[name], ServiceSpec.model_validate(services[name]))
    except ValidationError:
        return None


def cut_services(text: str) -> _Cut | None:
    """The file cut around its service blocks, None when the text does not cut cleanly: no
    single top-level `services:` line followed by an indented block of `name:` entries, an
    anchor (`&`) anywhere, or a tab in an indent there. A block runs from its `name:` line to
    the next one (its comments and blank lines included), the last one to the next top-level
    line."""
    if "&" in text:
        return None
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if _SERVICES_LINE.fullmatch(line)]
    if len(found) != 1:
        return None
    starts: list[tuple[str, int]] = []
    indent, end = 0, len(lines)
    for i in range(found[0] + 1, len(lines)):
        line = lines[i]
        content = line.lstrip(" ")
        if not content.strip() or content.startswith("#"):
            continue
        depth = len(line) - len(content)
        if depth == 0:
            end = i
            break
        indent = indent or depth
        if content.startswith("\t") or depth < indent:
            return None
        if depth == indent:
            key = _SERVICE_KEY.match(line)
            if key is None:
                return None
            starts.append((key.group(2), i))
    if not starts:
        return None
    stops = [i for _, i in starts[1:]] + [end]
    blocks = tuple(
        (name, "".join(lines[start:stop]))
        for (name, start), stop in zip(starts, stops, strict=True)
    )
    return _Cut("".join(lines[: starts[0][1]]), blocks, "".join(lines[end:]))
