"""Waiting with deadlines: poll a condition until it holds, never sleep and hope.

One helper for the fast tests, the e2e harness (e2e/harness/wait.py re-exports it and adds
HTTP probes) and the benchmarks: `wait_for` in threads and scripts (it can also watch the
processes it waits on), `wait_for_async` in asyncio code (it yields to the loop between
polls), `wait_steady` for a value to stop changing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time (an AssertionError so pytest shows it as a failure)."""


class ProcessDied(AssertionError):
    """A process we were waiting on exited first; the message carries its log tail."""


class NotYet(Exception):
    """Raised by a condition to say "not yet, and here is what I saw" (shown on timeout)."""


class Watched(Protocol):
    """A process a wait gives up on when it exits (the e2e harness's Proc)."""

    name: str

    @property
    def returncode(self) -> int | None: ...

    def alive(self) -> bool: ...

    def tail(self) -> str: ...


def wait_for(
    condition: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
    procs: Iterable[Watched] = (),
    check: Callable[[], None] | None = None,
) -> T:
    """Poll `condition` until it returns something truthy and return that value.

    Exceptions of the `ignore` types count as "not yet". If any of `procs` exits meanwhile,
    fail at once with its log instead of waiting out the deadline; `check`, called after each
    poll that is not yet, may likewise raise to give up at once."""
    watched = list(procs)
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last = value
        except ignore as err:
            last = err
        for proc in watched:
            if not proc.alive():
                raise ProcessDied(
                    f"{proc.name} exited with {proc.returncode} while waiting for {message}\n"
                    f"{proc.tail()}"
                )
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {message}; last: {last!r}")
        time.sleep(interval)


def holds_within(condition: Callable[[], object], timeout: float, interval: float = 0.05) -> bool:
    """Whether `condition` holds within `timeout` (polled like `wait_for`), instead of failing."""
    try:
        wait_for(condition, timeout, interval)
    except WaitTimeout:
        return False
    return True


async def wait_for_async(
    condition: Callable[[], T | Awaitable[T | None] | None],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`wait_for` for asyncio code: `condition` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = condition()
            if isinstance(value, Awaitable):
                value = await value
            if value:
                return value  # type: ignore[return-value]
            last = value
        except ignore as err:
            last = err
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {message}; last: {last!r}")
        await asyncio.sleep(interval)


class Steady:
    """A polled value and when it last changed (for waits that end when something stops
    moving, e.g. counts that no longer grow)."""

    def __init__(self, value: object) -> None:
        self.value, self.changed_at = value, time.monotonic()

    def update(self, value: object) -> float:
        """Take a new reading; how long the value has stayed as it is now, in seconds."""
        now = time.monotonic()
        if value != self.value:
            self.value, self.changed_at = value, now
        return now - self.changed_at


def wait_steady(
    read: Callable[[], T],
    quiet: float,
    timeout: float = 30.0,
    interval: float = 0.1,
    message: str = "a value to stop changing",
) -> T:
    """Poll `read` until what it returns has not changed for `quiet` seconds; that value."""
    steady = Steady(read())

    def still() -> tuple[T] | None:
        value = read()
        return (value,) if steady.update(value) >= quiet else None

    return wait_for(still, timeout, interval, message)[0]
