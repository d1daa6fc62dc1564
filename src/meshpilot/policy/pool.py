"""A supervised pool of hook processes (see `hook_process`) for one mixer worker.

A check takes an idle process, sends it the request and waits at most the hook timeout
(counting the wait for a process): a hook that overruns, a process that dies (`os._exit`) or
answers nonsense costs that request a deny and a log line; the process is killed and a fresh
one started in the background. Processes are started once and reused, so a normal check costs
two pipe writes, not a process start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time

from meshpilot.background import background
from meshpilot.policy.decision import DENY, Decision, Request
from meshpilot.policy.hook_process import decision_of, decode, encode, request_message

log = logging.getLogger(__name__)

POOL_SIZE = 4
_COMMAND = (sys.executable, "-m", "meshpilot.policy.hook_process")


class _HookProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin, self.stdout = process.stdin, process.stdout

    async def ask(self, message: dict[str, object]) -> Decision:
        self.stdin.write(encode(message))
        await self.stdin.drain()
        head = await self.stdout.readexactly(4)
        return decision_of(decode(await self.stdout.readexactly(int.from_bytes(head, "big"))))

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()


class HookPool:
    """`await start()` (else the first check starts it), `await decide(ref, request, timeout)`,
    `await close()` stops every process."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self.size = size
        self._idle: asyncio.Queue[_HookProcess] | None = None
        self._all: set[_HookProcess] = set()
        self.replaced = 0  # processes killed and replaced (a hook overran, exited or failed)

    async def decide(self, ref: str, request: Request, timeout: float) -> Decision:
        deadline = time.monotonic() + timeout
        idle = self._started()
        try:
            worker = await asyncio.wait_for(idle.get(), timeout)
        except TimeoutError:
            log.error("hook %s: no hook process free within %.0f ms; denying", ref, timeout * 1e3)
            return DENY
        try:
            remaining = max(0.0, deadline - time.monotonic()) + 0.05  # the child times it too
            decision = await asyncio.wait_for(
                worker.ask(request_message(ref, request, timeout)), remaining
            )
        except (TimeoutError, asyncio.IncompleteReadError, OSError, ValueError, KeyError) as err:
            log.error("hook %s: %s; denying and replacing its process", ref, _why(err))
            self._replace(worker)
            return DENY
        idle.put_nowait(worker)
        return decision

    async def start(self) -> None:
        """Start the processes and wait until they are up (a Python start each, far longer than
        a check may take)."""
        if self._idle is None:
            self._idle = asyncio.Queue()
            await asyncio.gather(*(self._spawn() for _ in range(self.size)))

    async def close(self) -> None:
        for worker in list(self._all):
            await worker.kill()
        self._all.clear()
        self._idle = None

    def _started(self) -> asyncio.Queue[_HookProcess]:
        if self._idle is None:
            self._idle = asyncio.Queue()
            for _ in range(self.size):
                background(self._spawn(), "start a hook process")
        return self._idle

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            *_COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        worker = _HookProcess(process)
        self._all.add(worker)
        if self._idle is not None:
            self._idle.put_nowait(worker)

    def _replace(self, worker: _HookProcess) -> None:
        self.replaced += 1
        self._all.discard(worker)
        background(worker.kill(), "stop a hook process")
        background(self._spawn(), "start a hook process")


def _why(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "timed out"
    if isinstance(err, asyncio.IncompleteReadError):
        return "its process exited"
    return f"bad answer ({type(err).__name__}: {err})"
