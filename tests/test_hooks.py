"""Custom policy hooks: loading, reloading, and every way a hook can fail (which denies)."""

from __future__ import annotations

import os
from pathlib import Path

from meshpilot.policy.decision import Decision, Request
from meshpilot.policy.hooks import HookLoader, run_hook

REQUEST = Request("frontend", "ratings", "GET", "/ratings/1", {"x-user": "ann"})


def write_hook(path: Path, body: str, mtime: int | None = None) -> str:
    path.write_text("from meshpilot.policy import Decision\n\n" + body)
    if mtime is not None:
        os.utime(path, ns=(mtime, mtime))
    return f"{path}:check"


async def decide(ref: str, loader: HookLoader, timeout: float = 0.2) -> Decision:
    return await run_hook(ref, loader.get(ref), REQUEST, timeout)


async def test_true_false_and_decisions(tmp_path: Path) -> None:
    loader = HookLoader(recheck=0)
    allow = write_hook(
        tmp_path / "a.py", "def check(r):\n    return r.headers['x-user'] == 'ann'\n"
    )
    deny = write_hook(tmp_path / "d.py", "def check(r):\n    return r.source == 'nobody'\n")
    custom = write_hook(
        tmp_path / "c.py",
        "def check(r):\n"
        "    return Decision(False, status=429, headers={'x-why': 'quota'}, body='no')\n",
    )
    assert (await decide(allow, loader)).allow
    assert not (await decide(deny, loader)).allow
    assert await decide(custom, loader) == Decision(False, 429, {"x-why": "quota"}, "no")


async def test_async_hooks_are_awaited_and_time_out(tmp_path: Path) -> None:
    loader = HookLoader(recheck=0)
    quick = write_hook(tmp_path / "q.py", "async def check(r):\n    return True\n")
    slow = write_hook(
        tmp_path / "s.py",
        "import asyncio\nasync def check(r):\n    await asyncio.sleep(5)\n    return True\n",
    )
    assert (await decide(quick, loader)).allow
    assert not (await decide(slow, loader, timeout=0.05)).allow


async def test_a_hook_that_raises_or_returns_junk_denies(tmp_path: Path) -> None:
    loader = HookLoader(recheck=0)
    raises = write_hook(tmp_path / "r.py", "def check(r):\n    raise RuntimeError('boom')\n")
    junk = write_hook(tmp_path / "j.py", "def check(r):\n    return 'yes'\n")
    broken = write_hook(tmp_path / "b.py", "def check(r)\n")
    missing = f"{tmp_path / 'a.py'}:nope"
    for ref in (raises, junk, broken, missing):
        assert not (await decide(ref, loader)).allow, ref


async def test_an_edited_hook_file_is_reloaded(tmp_path: Path) -> None:
    loader = HookLoader(recheck=0)
    ref = write_hook(tmp_path / "h.py", "def check(r):\n    return False\n", mtime=1_000_000_000)
    assert not (await decide(ref, loader)).allow
    write_hook(tmp_path / "h.py", "def check(r):\n    return True\n", mtime=2_000_000_000)
    assert (await decide(ref, loader)).allow
