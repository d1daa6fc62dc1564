"""Wording shared by what meshpilot prints and logs: counts ("1 service", "2 services", never
"1 services") and what serves while a save of the mesh file is rejected."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural (`noun + "s"` unless given) unless it is 1."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def serving(version: str | None) -> str:
    """What serves while a save of the mesh file is rejected, said for a person."""
    if version is None:
        return (
            "nothing is applied yet: sidecars wait for a valid file (an empty mesh meanwhile: "
            "every host answers 404)"
        )
    return f"version {version} keeps serving"
