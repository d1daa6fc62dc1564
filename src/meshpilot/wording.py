"""Words for counts in what meshpilot prints: "1 service", "2 services", never "1 services"."""

from __future__ import annotations


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """`count` and `noun`, the noun in the plural (`noun + "s"` unless given) unless it is 1."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
