"""A composed YAML document as plain values, and any place in those values back at its node.

The YAML is composed into nodes (which keep line:col marks) and turned into plain values here
rather than by PyYAML's constructor, for three reasons: duplicate keys must be reported (YAML
keeps the last one silently), keys must stay text (YAML 1.1 reads the retry key `on` as `True`),
and every later problem (pydantic's or a cross-field rule's) must lead back to a node.
"""

from __future__ import annotations

import json
import re
from typing import cast

import yaml

from meshpilot.mesh.diagnostics import ROOT, Diagnostic, Issue, Loc, MeshInvalid, at_start, one_line

# Aliases can make a small file expand exponentially ("billion laughs"); refuse past this size.
MAX_VALUES = 5_000_000

_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
_TEXT_TAGS = {_YAML_TAG + "str", _YAML_TAG + "value"}  # `value` is `=`, which PyYAML cannot load
_COLLECTION_TAGS = {_YAML_TAG + "map", _YAML_TAG + "seq"}
_SCALAR_CONSTRUCTORS = {
    _YAML_TAG + kind: yaml.constructor.SafeConstructor.yaml_constructors[_YAML_TAG + kind]
    for kind in ("null", "bool", "int", "float", "binary", "timestamp")
}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


class Tree:
    """A composed YAML document as plain values, able to point any location back at a node."""

    def __init__(self, root: yaml.Node, filename: str, shared: bool) -> None:
        self.root, self.filename = root, filename
        self.problems: list[Diagnostic] = []
        self.unreadable: set[Loc] = set()  # already reported: pydantic would only repeat it
        self._shared = shared  # whether nodes may be shared through aliases
        self._scalars = yaml.constructor.SafeConstructor()
        self._done: dict[int, object] = {}
        self._active: set[int] = set()
        self._keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = {}

    def value(self) -> object:
        data = self._value(self.root, ())
        if self._shared and _expanded_size(self.root) > MAX_VALUES:
            message = f"aliases expand the file to more than {MAX_VALUES:,} values"
            raise MeshInvalid([at_start(self.filename, message)])
        return data

    def diagnostic(self, issue: Issue) -> Diagnostic:
        """Place `issue` at its node: the key for problems with a key, else the value."""
        node, found = self._locate(issue.loc, issue.at_key)
        return _diagnostic(self.filename, node, found, issue.message)

    def _problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.problems.append(_diagnostic(self.filename, node, loc, message))

    def _value(self, node: yaml.Node, loc: Loc) -> object:
        """Aliased nodes are built once (so aliases cannot make this exponential) and a node
        that contains an alias to itself is reported instead of looping."""
        if not self._shared:
            return self._build(node, loc)
        if id(node) in self._done:
            return self._done[id(node)]
        if id(node) in self._active:
            self._problem(node, loc, "an alias refers to a node that contains it")
            return None
        self._active.add(id(node))
        try:
            value = self._done[id(node)] = self._build(node, loc)
        finally:
            self._active.discard(id(node))
        return value

    def _build(self, node: yaml.Node, loc: Loc) -> object:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if node.tag not in _COLLECTION_TAGS:
            self._problem(node, loc, f"tag '{_tag_name(node.tag)}' is not supported here")
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        return [self._value(item, (*loc, i)) for i, item in enumerate(node.value)]

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> object:
        if node.tag in _TEXT_TAGS:
            return node.value
        construct = _SCALAR_CONSTRUCTORS.get(node.tag)
        try:
            if construct is not None:
                return construct(self._scalars, node)
            message = f"tag '{_tag_name(node.tag)}' is not supported here"
        except Exception:  # PyYAML raises assorted errors, e.g. for `!!int x` or `2024-13-45`
            message = f"cannot read {node.value!r} as {_tag_name(node.tag)}"
        self._problem(node, loc, message)
        self.unreadable.add(loc)
        return node.value

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
        """Keys stay text; the last of duplicate keys wins, as in PyYAML, but is reported."""
        result: dict[str, object] = {}
        merges = False
        for key, value in node.value:
            if key.tag == _MERGE_TAG:
                merges = True
            elif not isinstance(key, yaml.ScalarNode):
                self._problem(key, loc, "a key must be a plain string, not a mapping or list")
            else:
                if key.value in result:
                    self._duplicate(node, key, loc)
                result[key.value] = self._value(value, (*loc, key.value))
        return self._merged(node, loc) | result if merges else result

    def _duplicate(self, node: yaml.MappingNode, key: yaml.ScalarNode, loc: Loc) -> None:
        first = next(k for k, _ in node.value if k.tag != _MERGE_TAG and k.value == key.value)
        line = first.start_mark.line + 1
        message = f"duplicate key '{key.value}' (first on line {line})"
        self._problem(key, (*loc, key.value), message)

    def _merged(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
        """What `<<: *x` or `<<: [*x, *y]` brings in; earlier mappings win over later ones."""
        merged: dict[str, object] = {}
        for source in _merge_sources(node):
            if not isinstance(source, yaml.MappingNode):
                self._problem(source, loc, "'<<' merges a mapping or a list of mappings")
            elif isinstance(built := self._value(source, loc), dict):
                merged = built | merged
        return merged

    def _locate(self, loc: Loc, at_key: bool) -> tuple[yaml.Node, Loc]:
        """The node at `loc` (or its key node) and the part of `loc` that exists in the file."""
        node, key, found = self.root, None, cast(Loc, ())
        for item in loc:
            entry = self._entry(node, item) if isinstance(item, str) else None
            if entry is not None:
                key, node = entry
            elif isinstance(node, yaml.SequenceNode) and isinstance(item, int):
                if not 0 <= item < len(node.value):
                    break
                key, node = None, node.value[item]
            else:
                break
            found = (*found, item)
        return (key if at_key and key is not None else node), found

    def _entry(
        self, node: yaml.Node, key: str, depth: int = 0
    ) -> tuple[yaml.Node, yaml.Node] | None:
        """Where `key` of a mapping is written: its last own occurrence, else the first merge."""
        if not isinstance(node, yaml.MappingNode) or depth > 100:
            return None
        if id(node) not in self._keys:
            self._keys[id(node)] = {
                k.value: (k, v)
                for k, v in node.value
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG
            }
        if key in self._keys[id(node)]:
            return self._keys[id(node)][key]
        merged = (self._entry(source, key, depth + 1) for source in _merge_sources(node))
        return next((entry for entry in merged if entry is not None), None)


def _merge_sources(node: yaml.MappingNode) -> list[yaml.Node]:
    """The nodes named by `<<: *x` or `<<: [*x, *y]`, in order of precedence."""
    sources: list[yaml.Node] = []
    for key, value in node.value:
        if key.tag == _MERGE_TAG:
            sources += value.value if isinstance(value, yaml.SequenceNode) else [value]
    return sources


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document holds once every alias is expanded."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 1  # while counting its children: a cycle counts once
            children = node.value if isinstance(node, yaml.SequenceNode) else []
            if isinstance(node, yaml.MappingNode):
                children = [child for pair in node.value for child in pair]
            sizes[id(node)] = 1 + sum(size(child) for child in children)
        return sizes[id(node)]

    return size(root)


def _diagnostic(filename: str, node: yaml.Node, loc: Loc, message: str) -> Diagnostic:
    mark = node.start_mark
    return Diagnostic(filename, mark.line + 1, mark.column + 1, _path(loc), one_line(message))


def _tag_name(tag: str) -> str:
    return "!!" + tag.removeprefix(_YAML_TAG) if tag.startswith(_YAML_TAG) else tag


def _path(loc: Loc) -> str:
    """`('services', 'reviews', 'routes', 1)` -> `services.reviews.routes[1]`."""
    path = ""
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
        elif _PLAIN_KEY.fullmatch(item):
            path += f".{item}" if path else item
        else:
            path += f"[{json.dumps(item)}]"
    return path or ROOT
