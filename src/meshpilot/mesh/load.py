"""Reading a mesh file: YAML text -> MeshSpec, or MeshInvalid listing every problem with its place.

The YAML is composed into nodes (which keep line:col marks) and turned into plain values here
rather than by PyYAML's constructor, for three reasons: duplicate keys must be reported (YAML
keeps the last one silently), keys must stay text (YAML 1.1 reads the retry key `on` as `True`),
and every later problem (pydantic's or a cross-field rule's) must lead back to a node.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, cast, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from meshpilot.gc_pause import gc_paused
from meshpilot.mesh.diagnostics import Diagnostic, Issue, Loc, MeshInvalid, suggest
from meshpilot.mesh.fields import MAPPING_FORM, SHAPE_TAGS
from meshpilot.mesh.references import cross_checks
from meshpilot.mesh.schema import MeshSpec

ROOT = "<root>"
# Aliases can make a small file expand exponentially ("billion laughs"); refuse past this size.
MAX_VALUES = 5_000_000

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster, same marks
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE
_YAML_TAG = "tag:yaml.org,2002:"
_MERGE_TAG = _YAML_TAG + "merge"
_TEXT_TAGS = {_YAML_TAG + "str", _YAML_TAG + "value"}  # `value` is `=`, which PyYAML cannot load
_COLLECTION_TAGS = {_YAML_TAG + "map", _YAML_TAG + "seq"}
_SCALAR_CONSTRUCTORS = {
    _YAML_TAG + kind: yaml.constructor.SafeConstructor.yaml_constructors[_YAML_TAG + kind]
    for kind in ("null", "bool", "int", "float", "binary", "timestamp")
}
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_LINE_BREAKS = re.compile("[\t\n\r\x85\u2028\u2029]")


def load_mesh(path: Path) -> MeshSpec:
    """Read and validate the mesh file at `path`; any problem, even an unreadable file, is a
    MeshInvalid so that callers have one thing to catch."""
    filename = str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        reason = err.strerror or str(err)
        raise MeshInvalid([_at_start(filename, f"cannot read the file: {reason}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        readable = data[: err.start].decode("utf-8")
        line, col = _line_col(readable, len(readable))
        message = f"the file is not UTF-8 text (byte 0x{data[err.start]:02x} cannot be decoded)"
        raise MeshInvalid([Diagnostic(filename, line, col, ROOT, message)]) from None
    return parse_mesh(text, filename)


def parse_mesh(text: str, filename: str) -> MeshSpec:
    """Validate mesh file `text`; `filename` is only used in the problems reported."""
    try:
        with gc_paused():
            return _parse(text, filename)
    except MeshInvalid:
        raise
    except RecursionError:
        raise MeshInvalid([_at_start(filename, "the file is nested too deeply")]) from None
    except Exception as err:  # `validate` promises problems, never a traceback
        message = f"internal error while validating ({type(err).__name__}: {err}); please report it"
        raise MeshInvalid([_at_start(filename, message)]) from err


def _parse(text: str, filename: str) -> MeshSpec:
    _check_characters(text, filename)
    root = _compose(text, filename)
    if root is None:
        message = "the file is empty; a mesh file is a mapping that starts with 'mesh: NAME'"
        raise MeshInvalid([_at_start(filename, message)])
    tree = _Tree(root, filename, shared="&" in text)  # no anchor, no alias, nothing shared
    data = tree.value()
    if not isinstance(data, dict):
        message = f"the file must be a mapping of keys such as 'mesh', got {_describe(data)}"
        raise MeshInvalid([*tree.problems, tree.diagnostic(Issue((), message))])
    spec, issues = _validate(data)
    base_dir = Path(filename).parent
    issues += cross_checks(data, base_dir)
    issues = [issue for issue in issues if issue.loc not in tree.unreadable]
    problems = tree.problems + [tree.diagnostic(issue) for issue in issues]
    if problems or spec is None:
        raise MeshInvalid(problems)
    return spec


def _validate(data: dict[str, Any]) -> tuple[MeshSpec | None, list[Issue]]:
    try:
        return MeshSpec.model_validate(data), []
    except ValidationError as err:
        return None, [_issue(error) for error in err.errors(include_url=False)]


# --- text and YAML syntax -------------------------------------------------------------------


def _check_characters(text: str, filename: str) -> None:
    """YAML forbids control characters; find them here to point at the first one exactly."""
    found = [m.start() for m in _NON_PRINTABLE.finditer(text)]
    if not found:
        return
    line, col = _line_col(text, found[0])
    message = f"character U+{ord(text[found[0]]):04X} is not allowed in YAML"
    if len(found) > 1:
        message += f" ({len(found) - 1} more in the file)"
    raise MeshInvalid([Diagnostic(filename, line, col, ROOT, message)])


def _compose(text: str, filename: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = _yaml_message(err, text.splitlines()[line - 1 : line])
        raise MeshInvalid([Diagnostic(filename, line, col, ROOT, _one_line(message))]) from None
    except yaml.YAMLError as err:
        raise MeshInvalid([_at_start(filename, f"invalid YAML: {err}")]) from None
    return node


def _yaml_message(err: yaml.MarkedYAMLError, line: list[str]) -> str:
    """PyYAML's words, in one line, plus a hint for the classic mistake: a tab."""
    problem, context = err.problem or "syntax error", err.context
    mark, at = _position(err.context_mark), _position(err.problem_mark)
    where = f" at {mark[0]}:{mark[1]}" if mark and mark != at else ""
    if context and problem.startswith("but "):
        message = f"{context}{where}, {problem}"
    elif context:
        message = f"{problem} ({context}{where})"
    else:
        message = problem
    column = at[1] - 1 if at else -1
    if line and 0 <= column < len(line[0]) and line[0][column] == "\t":
        message += "; YAML indents with spaces, never tabs"
    return f"invalid YAML: {message}"


def _position(mark: yaml.Mark | None) -> tuple[int, int] | None:
    return (mark.line + 1, mark.column + 1) if mark else None


def _line_col(text: str, index: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _at_start(filename: str, message: str) -> Diagnostic:
    return Diagnostic(filename, 1, 1, ROOT, _one_line(message))


# --- nodes to values, and back ----------------------------------------------------------------


class _Tree:
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
            raise MeshInvalid([_at_start(self.filename, message)])
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
    return Diagnostic(filename, mark.line + 1, mark.column + 1, _path(loc), _one_line(message))


def _one_line(message: str) -> str:
    """Keys and values quoted in a message may hold line breaks; `validate` prints one line each."""
    return _LINE_BREAKS.sub(lambda found: json.dumps(found[0])[1:-1], message)


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


# --- pydantic errors to messages --------------------------------------------------------------

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _issue(error: ErrorDetails) -> Issue:
    """An error at its place in the file; `typed` keeps the union tags that name the form used."""
    typed, kind = tuple(error["loc"]), error["type"]
    loc = tuple(item for item in typed if item not in SHAPE_TAGS)
    if kind == "missing":
        return Issue(loc[:-1], f"missing required key '{loc[-1]}'", at_key=True)
    if kind == "extra_forbidden":
        return Issue(loc, _unknown_key(typed), at_key=True)
    if loc and loc[-1] == "[key]":
        return Issue(loc[:-1], error["msg"], at_key=True)
    return Issue(loc, _message(error, typed))


def _unknown_key(typed: Loc) -> str:
    key = str(typed[-1])
    model = _type_at(typed[:-1])
    known = [f.alias or n for n, f in model.model_fields.items()] if _is_model(model) else []
    close = suggest(key, known)
    if close:
        return f"unknown key '{key}'; did you mean '{close}'?"
    return f"unknown key '{key}'; expected one of: {', '.join(known)}"


def _message(error: ErrorDetails, loc: Loc) -> str:
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, got {_describe(value)}"
        if kind == "string_type" and isinstance(value, int | float):
            message += "; put it in quotes if it is meant as text"
        return message
    if kind == "literal_error":
        return _not_allowed(value, [str(c) for c in get_args(_type_at(loc))])
    if kind == "greater_than_equal":
        return f"must be {ctx['ge']} or more, got {_describe(value)}"
    if kind == "less_than_equal":
        return f"must be {ctx['le']} or less, got {_describe(value)}"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    return error["msg"]


def _not_allowed(value: object, choices: list[str]) -> str:
    close = suggest(value, choices) if isinstance(value, str) else None
    if close:
        return f"unknown value '{value}'; did you mean '{close}'?"
    return f"expected one of {', '.join(choices)}; got {_describe(value)}"


def _describe(value: object) -> str:
    """A value as the user wrote it, short enough for one line."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}" if value.bit_length() < 128 else "a very large integer"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value if len(value) <= 40 else value[:37] + '...'!r}"
    names: dict[type, str] = {list: "a list", dict: "a mapping", bytes: "binary data"}
    return names.get(type(value), f"a {type(value).__name__}")


def _type_at(loc: Loc) -> Any:
    """The schema type at `loc`, to name the keys or values that would have been accepted."""
    current: Any = MeshSpec
    for item in loc:
        current = _unwrap(current)
        if item in SHAPE_TAGS:
            current = _form(current, item)
        elif _is_model(current):
            field = current.model_fields.get(str(item))
            current = field.annotation if field else None
        elif get_origin(current) is dict:
            current = get_args(current)[0 if item == "[key]" else 1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return None
    return _unwrap(current)


def _field(model: type[BaseModel], key: str) -> Any:
    """A model's field by the key written in the file (its alias, as `from` for `from_`)."""
    return next((f for n, f in model.model_fields.items() if (f.alias or n) == key), None)


def _form(union: Any, tag: object) -> Any:
    """The member of a shorthand-or-mapping union that `tag` names."""
    members = [_unwrap(m) for m in get_args(union)]
    models = [m for m in members if _is_model(m)]
    others = [m for m in members if not _is_model(m)]
    chosen = models if tag == MAPPING_FORM else others
    return chosen[0] if chosen else None


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `| None`, which do not change what a value may be."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, UnionType):
            kinds = [a for a in get_args(annotation) if a is not type(None)]
            if len(kinds) != 1:
                return annotation
            annotation = kinds[0]
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)
