"""Durations: a number and a unit, read as whole milliseconds."""

from __future__ import annotations

import pytest

from meshpilot.mesh.durations import DurationError, parse_duration


@pytest.mark.parametrize(
    ("text", "millis"),
    [
        ("0s", 0),
        ("0ms", 0),
        ("250ms", 250),
        ("2s", 2_000),
        ("1.5s", 1_500),
        ("0.25s", 250),
        ("1m", 60_000),
        ("1.5m", 90_000),
        ("1h", 3_600_000),
        ("007s", 7_000),
        ("87660000h", 315_576_000_000_000),
    ],
)
def test_valid_durations(text: str, millis: int) -> None:
    assert parse_duration(text) == millis


NOT_A_DURATION = "is not a duration; write a number and a unit, like '250ms', '2s', '1m' or '1h'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2", "duration '2' has no unit; add one, like '250ms', '2s', '1m' or '1h'"),
        ("-1s", "duration '-1s' is negative; durations must be 0 or more"),
        ("-5", "duration '-5' is negative; durations must be 0 or more"),
        ("2d", "duration '2d' has unknown unit 'd'; use ms, s, m or h"),
        ("2S", "duration '2S' has unknown unit 'S'; use ms, s, m or h"),
        ("5us", "duration '5us' has unknown unit 'us'; use ms, s, m or h"),
        ("0.5ms", "duration '0.5ms' is not a whole number of milliseconds"),
        ("1.0001s", "duration '1.0001s' is not a whole number of milliseconds"),
        ("87660001h", "duration '87660001h' is too long for Envoy (at most 87660000h)"),
        ("", f"'' {NOT_A_DURATION}"),
        ("s", f"'s' {NOT_A_DURATION}"),
        (" 2s", f"' 2s' {NOT_A_DURATION}"),
        ("2 s", f"'2 s' {NOT_A_DURATION}"),
        (".5s", f"'.5s' {NOT_A_DURATION}"),
        ("1m30s", f"'1m30s' {NOT_A_DURATION}"),
        ("1e3ms", f"'1e3ms' {NOT_A_DURATION}"),
        ("+1s", f"'+1s' {NOT_A_DURATION}"),
    ],
)
def test_invalid_durations(text: str, message: str) -> None:
    with pytest.raises(DurationError) as raised:
        parse_duration(text)
    assert str(raised.value) == message


def test_duration_error_is_a_value_error() -> None:
    assert issubclass(DurationError, ValueError)
