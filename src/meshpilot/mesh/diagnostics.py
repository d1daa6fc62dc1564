"""Problems in a mesh file, reported as data so that every one of them can be shown at once."""

from __future__ import annotations

from dataclasses import dataclass

from meshpilot.errors import MeshpilotError


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
