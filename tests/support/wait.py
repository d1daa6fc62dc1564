"""Waiting on a condition with a deadline: tests synchronise on state, never on a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_S = 0.005


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Return once `condition()` is true; raise TimeoutError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise TimeoutError(f"not true within {timeout} s: {condition}")
        await asyncio.sleep(POLL_S)  # polling, not synchronisation: the condition decides
