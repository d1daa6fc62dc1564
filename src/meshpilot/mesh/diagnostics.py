"""Problems in a mesh file, reported as data so that every one of them can be shown at once."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from meshpilot.errors import MeshpilotError

ROOT = "<root>"  # the path of a problem with the whole file
_LINE_BREAKS = re.compile("[\t\n\r\x85\u2028\u2029]")


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem at a place in the mesh file."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.path}: {self.message}"


class MeshInvalid(MeshpilotError):
    """The mesh file has problems; `problems` holds all of them, sorted by position."""

    def __init__(self, problems: list[Diagnostic]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(p.format() for p in self.problems))


Loc = tuple[str | int, ...]  # a place in the file's data: keys and list indexes from the top


class Issue(NamedTuple):
    """A problem found by a rule: where (`loc`, at the key node or its value) and why."""

    loc: Loc
    message: str
    at_key: bool = False


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice the user most likely meant: same letters in another case, else a close one."""
    choices = list(choices)
    same_case = [c for c in choices if c.lower() == word.lower()]
    if same_case:
        return same_case[0]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def one_line(message: str) -> str:
    """Keys and values quoted in a message may hold line breaks; `validate` prints one line each."""
    return _LINE_BREAKS.sub(lambda found: json.dumps(found[0])[1:-1], message)


def at_start(filename: str, message: str) -> Diagnostic:
    """A problem with the whole file, placed at its start."""
    return Diagnostic(filename, 1, 1, ROOT, one_line(message))
