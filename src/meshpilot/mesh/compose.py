"""YAML text -> YAML nodes that keep their line:col marks, or the syntax problem, placed."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.reader import Reader

from meshpilot.mesh.diagnostics import ROOT, Diagnostic, MeshInvalid, at_start, one_line

_NON_PRINTABLE = Reader.NON_PRINTABLE
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster, same marks


def check_characters(text: str, filename: str) -> None:
    """YAML forbids control characters; find them here to point at the first one exactly."""
    found = [m.start() for m in _NON_PRINTABLE.finditer(text)]
    if not found:
        return
    line, col = line_col(text, found[0])
    message = f"character U+{ord(text[found[0]]):04X} is not allowed in YAML"
    if len(found) > 1:
        message += f" ({len(found) - 1} more in the file)"
    raise MeshInvalid([Diagnostic(filename, line, col, ROOT, message)])


def compose(text: str, filename: str) -> yaml.Node | None:
    """The document's root node (None for an empty file); a syntax error is a MeshInvalid."""
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = _yaml_message(err, text.splitlines()[line - 1 : line])
        raise MeshInvalid([Diagnostic(filename, line, col, ROOT, one_line(message))]) from None
    except yaml.YAMLError as err:
        raise MeshInvalid([at_start(filename, f"invalid YAML: {err}")]) from None
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


def line_col(text: str, index: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1
