"""Hooks run in a supervised pool of processes (issue #13 item 4): a hook that blocks, exits or is
interrupted costs its own request a deny, never the worker; the other checks go on, and a fixed
hook file is used by the next check. Real processes, real pipes."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshpilot.policy.decision import Decision, Request
from meshpilot.policy.pool import HookPool
from tests.test_hooks import REQUEST, write_hook

TIMEOUT = 0.5


@pytest.fixture
async def pool() -> AsyncIterator[HookPool]:
    hooks = HookPool(size=2)
    try:
        yield hooks
    finally:
        await hooks.close()


async def warm(pool: HookPool, ref: str) -> None:
    """The first check starts the processes (a Python start each): not timed."""
    assert (await pool.decide(ref, REQUEST, 10.0)).allow


async def test_decisions_come_back_from_the_hook_process(pool: HookPool, tmp_path: Path) -> None:
    allow = write_hook(tmp_path / "a.py", "def check(r):\n    return r.source == 'frontend'\n")
    custom = write_hook(
        tmp_path / "c.py",
        "def check(r):\n    print('noise on stdout')\n"
        "    return Decision(False, status=429, headers={'x-why': 'quota'}, body='no')\n",
    )
    asynchronous = write_hook(tmp_path / "s.py", "async def check(r):\n    return True\n")
    await warm(pool, allow)
    assert await pool.decide(custom, REQUEST, TIMEOUT) == Decision(
        False, 429, {"x-why": "quota"}, "no"
    )
    assert (await pool.decide(asynchronous, REQUEST, TIMEOUT)).allow
    latencies = []
    for _ in range(200):
        started = time.perf_counter()
        await pool.decide(allow, REQUEST, TIMEOUT)
        latencies.append(time.perf_counter() - started)
    assert statistics.median(latencies) < 0.005  # a pipe round trip, not a process start
    assert pool.replaced == 0


async def test_a_blocking_hook_is_abandoned_and_others_are_answered(
    pool: HookPool, tmp_path: Path
) -> None:
    good = write_hook(tmp_path / "good.py", "def check(r):\n    return True\n")
    stuck = write_hook(
        tmp_path / "stuck.py",
        "import time\ndef check(r):\n    time.sleep(60)\n    return True\n",
        mtime=1_000_000_000,
    )
    await warm(pool, good)
    started = time.monotonic()
    blocked, other = await asyncio.gather(
        pool.decide(stuck, REQUEST, TIMEOUT), pool.decide(good, REQUEST, TIMEOUT)
    )
    assert not blocked.allow and other.allow
    assert time.monotonic() - started < TIMEOUT + 0.5
    write_hook(tmp_path / "stuck.py", "def check(r):\n    return True\n", mtime=2_000_000_000)
    assert (await pool.decide(stuck, REQUEST, 10.0)).allow  # the fixed file, next check
    assert pool.replaced == 1


@pytest.mark.parametrize(
    "body",
    [
        "import os\ndef check(r):\n    os._exit(1)\n",
        "import sys\ndef check(r):\n    sys.exit(0)\n",
        "def check(r):\n    raise KeyboardInterrupt\n",
    ],
    ids=["os._exit", "sys.exit", "KeyboardInterrupt"],
)
async def test_a_hook_that_exits_denies_and_the_pool_keeps_serving(
    pool: HookPool, tmp_path: Path, body: str
) -> None:
    good = write_hook(tmp_path / "good.py", "def check(r):\n    return True\n")
    fatal = write_hook(tmp_path / "fatal.py", body)
    await warm(pool, good)
    assert not (await pool.decide(fatal, REQUEST, TIMEOUT)).allow
    for _ in range(5):
        assert (await pool.decide(good, REQUEST, 10.0)).allow


def test_requests_cross_the_pipe_whole() -> None:
    from meshpilot.policy.hook_process import decode, encode, request_message

    request = Request("a", "b", "GET", "/p", {"x": "é"}, "q=1")
    message = decode(encode(request_message("f.py:check", request, 0.2))[4:])
    assert Request(**message["request"]) == request
