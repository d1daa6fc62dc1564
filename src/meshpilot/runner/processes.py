"""Local processes for `meshpilot up`: started in their own process group with a log file each,
restarted with back-off when they die, and all stopped together."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meshpilot.runner.envoy import parent_death_signal

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0)
STOP_GRACE_S = 5.0


@dataclass
class Supervised:
    """One process to keep running: how to start it and what happened to it."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
                preexec_fn=parent_death_signal(),
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Keeps a set of processes running until `stop_all()`."""

    def __init__(self) -> None:
        self.members: list[Supervised] = []

    def start(self, member: Supervised) -> Supervised:
        member.start()
        self.members.append(member)
        return member

    def check(self, now: float | None = None) -> None:
        """Report processes that died and restart them once their back-off has passed."""
        now = time.monotonic() if now is None else now
        for member in self.members:
            if member.restart_at is not None:
                if now >= member.restart_at:
                    member.restart_at = None
                    member.start()
                    log.warning("%s restarted (restart %d)", member.name, member.restarts)
                continue
            assert member.process is not None
            code = member.process.poll()
            if code is None:
                continue
            delay = BACKOFF_S[min(member.restarts, len(BACKOFF_S) - 1)]
            member.restarts += 1
            member.restart_at = now + delay
            log.error(
                "%s exited with status %s; restarting in %.1f s (log: %s)",
                member.name,
                code,
                delay,
                member.log_path,
            )

    def stop_all(self) -> None:
        """SIGTERM every process group, then SIGKILL what is still there after a grace period."""
        running = [m.process for m in self.members if m.process and m.process.poll() is None]
        for process in running:
            _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        for process in running:
            _signal_group(process.pid, signal.SIGKILL)  # children the leader left behind


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
