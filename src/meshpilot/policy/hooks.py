"""Custom policy hooks: Python functions loaded from files next to the mesh file.

A hook file is reloaded when it changes. A hook that raises (`sys.exit` included), times out or
returns something else than True, False or a Decision denies the request, and the error is
logged. This runs in a hook process (`hook_process`, `pool`), never in a mixer worker itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from meshpilot.policy.decision import ALLOW, DENY, Decision, Request

log = logging.getLogger(__name__)

Hook = Callable[[Request], Any]


@dataclass
class _Loaded:
    function: Hook | None
    mtime_ns: int
    checked_at: float


class HookLoader:
    """Loads `FILE.py:FUNCTION` references and reloads a file when its modification time changes.

    The file is looked at again at most every `recheck` seconds, so a busy mixer does not stat
    the file on every request.
    """

    def __init__(self, recheck: float = 0.5) -> None:
        self.recheck = recheck
        self._loaded: dict[str, _Loaded] = {}

    def get(self, ref: str) -> Hook | None:
        entry = self._loaded.get(ref)
        now = time.monotonic()
        if entry is not None and now - entry.checked_at < self.recheck:
            return entry.function
        file = ref.rpartition(":")[0]
        mtime = _mtime_ns(file)
        if entry is None or mtime != entry.mtime_ns:
            entry = _Loaded(_load(ref), mtime, now)
            self._loaded[ref] = entry
        entry.checked_at = now
        return entry.function


def _mtime_ns(file: str) -> int:
    try:
        return os.stat(file).st_mtime_ns
    except OSError:
        return -1


def _load(ref: str) -> Hook | None:
    """Import the file under a name of its own (so two hooks files never collide)."""
    file, _, name = ref.rpartition(":")
    module_name = "meshpilot_hook_" + hashlib.blake2b(file.encode(), digest_size=6).hexdigest()
    try:
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = getattr(module, name)
        if not callable(function):
            raise TypeError(f"{name} in {file} is not a function")
    except Exception:
        log.exception("cannot load hook %s; requests it decides are denied", ref)
        return None
    log.info("loaded hook %s", ref)
    return function  # type: ignore[no-any-return]


async def run_hook(ref: str, hook: Hook | None, request: Request, timeout: float) -> Decision:
    """The hook's decision; any failure denies. A sync hook runs inline (it should be quick): it
    cannot be interrupted, so one that overruns `timeout` is denied once it returns."""
    if hook is None:
        return DENY
    started = time.monotonic()
    try:
        result = hook(request)
        if inspect.isawaitable(result):
            result = await asyncio.wait_for(result, timeout)
        elif time.monotonic() - started > timeout:
            raise TimeoutError
    except TimeoutError:
        log.error("hook %s timed out after %.0f ms; denying", ref, timeout * 1000)
        return DENY
    except (Exception, SystemExit, KeyboardInterrupt):  # a hook's sys.exit() denies, no more
        log.exception("hook %s failed; denying", ref)
        return DENY
    return _as_decision(ref, result)


def _as_decision(ref: str, result: object) -> Decision:
    if result is True:
        return ALLOW
    if result is False:
        return DENY
    if isinstance(result, Decision):
        return result
    log.error("hook %s returned %r, not True, False or a Decision; denying", ref, result)
    return DENY
