"""Durations in the mesh file: a number with a unit, turned into whole milliseconds.

A bare number is refused on purpose: `timeout: 2` could mean seconds or milliseconds, and
guessing wrong is a silent outage.
"""

from __future__ import annotations

import re
from decimal import Decimal

UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}
# Envoy carries durations as google.protobuf.Duration, whose largest value is 315,576,000,000 s.
MAX_MS = 315_576_000_000_000

_DURATION = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]+)?)(?P<unit>[a-zA-Zµ]*)")
_EXAMPLE = "like '250ms', '2s', '1m' or '1h'"


class DurationError(ValueError):
    """A duration that cannot be read; the message says why and what would be accepted."""


def parse_duration(text: str) -> int:
    """Return `text` (such as '250ms', '1.5s', '1m') as whole milliseconds."""
    if text.startswith("-"):
        raise DurationError(f"duration {text!r} is negative; durations must be 0 or more")
    found = _DURATION.fullmatch(text)
    if found is None:
        raise DurationError(f"{text!r} is not a duration; write a number and a unit, {_EXAMPLE}")
    number, unit = Decimal(found["number"]), found["unit"]
    if not unit:
        raise DurationError(f"duration {text!r} has no unit; add one, {_EXAMPLE}")
    if unit not in UNITS_MS:
        raise DurationError(f"duration {text!r} has unknown unit {unit!r}; use ms, s, m or h")
    millis = number * UNITS_MS[unit]
    if millis != millis.to_integral_value():
        raise DurationError(f"duration {text!r} is not a whole number of milliseconds")
    if millis > MAX_MS:
        raise DurationError(f"duration {text!r} is too long for Envoy (at most 87660000h)")
    return int(millis)
