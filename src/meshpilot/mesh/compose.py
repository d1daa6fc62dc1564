"""YAML text -> a tree of YAML nodes that keep their line:col marks, or the syntax problem, placed.

Composition uses libyaml (PyYAML's C parser) when PyYAML was built with it, which is about ten
times faster than the pure-Python parser and gives the same marks; otherwise the Python parser.
Both parsers word some syntax errors differently: the Python parser's words are rewritten into
libyaml's (`_LIBYAML_WORDS`) so that a problem reads the same whichever parser found it. They
still disagree on a few texts: libyaml takes a tab as a space in more places (`key:<tab>value`)
and refuses unknown `%` directives, which the Python parser skips.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from meshpilot.mesh.diagnostics import ROOT, Diagnostic, MeshInvalid, at_start, one_line

_NON_PRINTABLE = Reader.NON_PRINTABLE
_SEQUENCE_TAG = Resolver.DEFAULT_SEQUENCE_TAG
_MAPPING_TAG = Resolver.DEFAULT_MAPPING_TAG
_TEXT_TAG = Resolver.DEFAULT_SCALAR_TAG


class _Resolver(Resolver):
    """PyYAML's tags for untagged nodes (YAML 1.1: `on` is a bool, `0x1F` an int...), memoised.

    The parser asks once per node; a plain scalar's answer tries several regexes, and a mesh file
    repeats the same keys and values many times, so each distinct scalar is resolved once. No path
    resolvers are registered with this class, so their per-node bookkeeping is skipped.
    """

    def __init__(self) -> None:
        super().__init__()
        self._plain_tags: dict[str, str] = {}

    def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is not yaml.ScalarNode:
            return _MAPPING_TAG if kind is yaml.MappingNode else _SEQUENCE_TAG
        if not implicit[0]:  # quoted, or tagged `!`: text
            return _TEXT_TAG
        tag = self._plain_tags.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            self._plain_tags[value] = tag
        return tag

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass


class PythonLoader(Reader, Scanner, Parser, Composer, _Resolver):
    """PyYAML's pure-Python parser and composer, with the resolver above."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Resolver.__init__(self)


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class LibyamlLoader(CParser, _Resolver):
        """libyaml's parser and composer (C), with the resolver above."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _Resolver.__init__(self)

    LOADERS: list[type[Any]] = [LibyamlLoader, PythonLoader]
else:
    LOADERS = [PythonLoader]
LOADER = LOADERS[0]  # the one `compose` uses: libyaml's when PyYAML has it


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
        node: yaml.Node | None = yaml.compose(text, Loader=LOADER)
    except yaml.MarkedYAMLError as err:
        at = _problem_place(err, text)
        line, col = at or _position(err.context_mark) or (1, 1)
        message = _yaml_message(err, at, text.splitlines()[line - 1 : line])
        raise MeshInvalid([Diagnostic(filename, line, col, ROOT, one_line(message))]) from None
    except yaml.YAMLError as err:
        raise MeshInvalid([at_start(filename, f"invalid YAML: {err}")]) from None
    return node


def _yaml_message(err: yaml.MarkedYAMLError, at: tuple[int, int] | None, line: list[str]) -> str:
    """PyYAML's words, in one line, plus a hint for the classic mistake: a tab."""
    problem, context = _libyaml_words(err.problem or "syntax error", err.context)
    mark = _position(err.context_mark)
    where = f" at {mark[0]}:{mark[1]}" if mark and mark != _position(err.problem_mark) else ""
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


def _problem_place(err: yaml.MarkedYAMLError, text: str) -> tuple[int, int] | None:
    """Where the problem is, as libyaml places it. At the end of a text without a final line
    break, libyaml starts a new line before it ends the stream, so what it finds then (the end,
    or a key still waiting for its ':') is at the start of the next line, where the Python parser
    stays at the end of the last line. libyaml points at an unknown escape's backslash."""
    mark, problem = err.problem_mark, err.problem or ""
    if mark is None:
        return None
    at_end = mark.index == len(text) and mark.column > 0
    if at_end and ("'<stream end>'" in problem or problem == "could not find expected ':'"):
        return mark.line + 2, 1
    if problem.startswith("found unknown escape character "):
        return mark.line + 1, mark.column
    return mark.line + 1, mark.column + 1


# The Python parser's problem (a pattern), in the context it comes with, and libyaml's words for
# it. Where the Python parser names the token it found, libyaml does not.
_LIBYAML_WORDS = [
    (None, r"expected ',' or '\}', but got .*", "did not find expected ',' or '}'"),
    (None, r"expected ',' or '\]', but got .*", "did not find expected ',' or ']'"),
    (None, r"found character .* that cannot start any token", "found character that cannot "
     "start any token"),
    (None, r"mapping values are not allowed here", "mapping values are not allowed in this "
     "context"),
    (None, r"mapping keys are not allowed here", "mapping keys are not allowed in this context"),
    (None, r"sequence entries are not allowed here", "block sequence entries are not allowed in "
     "this context"),
    ("while parsing a block mapping", r"expected <block end>, but found .*",
     "did not find expected key"),
    ("while parsing a block collection", r"expected <block end>, but found .*",
     "did not find expected '-' indicator"),
    (None, r"expected the node content, but found .*", "did not find expected node content"),
    (None, r"expected '<document start>', but found .*", "did not find expected <document start>"),
    (None, r"found undefined alias .*", "found undefined alias"),
    (None, r"expected alphabetic or numeric character, but found .*",
     "did not find expected alphabetic or numeric character"),
    (None, r"found incompatible YAML document \(.*\)", "found incompatible YAML document"),
    ("while parsing a tag", r"expected '>', but found .*", "did not find the expected '>'"),
    (None, r"expected chomping or indentation indicators, but found .*",
     "did not find expected comment or line break"),
    (None, r"expected a comment or a line break, but found .*",
     "did not find expected comment or line break"),
    (None, r"found unknown escape character .*", "found unknown escape character"),
]  # fmt: skip
_LIBYAML_CONTEXTS = {
    "while parsing a tag": "while scanning a tag",
    "while scanning a double-quoted scalar": "while parsing a quoted scalar",
}


def _libyaml_words(problem: str, context: str | None) -> tuple[str, str | None]:
    for when, pattern, words in _LIBYAML_WORDS:
        if (when is None or when == context) and re.fullmatch(pattern, problem, re.DOTALL):
            problem = words
            break
    return problem, _LIBYAML_CONTEXTS.get(context, context) if context else context


def _position(mark: yaml.Mark | None) -> tuple[int, int] | None:
    return (mark.line + 1, mark.column + 1) if mark else None


def line_col(text: str, index: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1
