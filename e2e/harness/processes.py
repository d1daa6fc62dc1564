"""Real processes for a test: each in its own process group, output to a per-test log file,
and all of them gone when the test ends, whatever happened."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.wait import holds_within

TERM_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
TAIL_LINES = 40


@dataclass
class Proc:
    """One started command. Its process group id equals its pid (`start_new_session`)."""

    name: str
    argv: list[str] = field(repr=False)
    popen: subprocess.Popen[bytes] = field(repr=False)
    log_path: Path = field(repr=False)
    started_at: float = field(default_factory=time.monotonic, repr=False)
    stopped: bool = False  # stopped and reaped by us: its group id may be reused, never signal

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = TAIL_LINES) -> str:
        text = "\n".join(self.log().splitlines()[-lines:])
        state = "running" if self.alive() else f"exit {self.returncode}"
        return f"==== {self.name} (pid {self.pid}, {state}) {self.log_path} ====\n{text}"

    def group_pids(self) -> list[int]:
        """Live (non-zombie) processes still in this process group, e.g. an Envoy child."""
        return group_members(self.pid)

    def signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)


def group_members(pgid: int) -> list[int]:
    """Pids in process group `pgid` that are not zombies, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Processes:
    """Starts processes for one test and stops every one of them in `stop_all()`."""

    def __init__(self, log_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        """Start `argv` in its own process group; stdout and stderr go to `<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self._log_path(name)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**self.env, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, list(argv), popen, log_path)
        self.procs.append(proc)
        return proc

    def _log_path(self, name: str) -> Path:
        """`<name>.log`, or `<name>-2.log` etc. when the name was used before in this test."""
        taken = {p.log_path for p in self.procs}
        path, n = self.log_dir / f"{name}.log", 1
        while path in taken:
            n += 1
            path = self.log_dir / f"{name}-{n}.log"
        return path

    def stop(self, proc: Proc, grace: float = TERM_GRACE) -> int:
        """SIGTERM the group, SIGKILL it after `grace` seconds; returns the leader's status."""
        return stop_groups([proc], grace)[0]

    def kill(self, proc: Proc) -> int:
        """SIGKILL the whole group at once, like a crash: no signal handler or clean-up runs.
        Returns the leader's status (-9)."""
        if not proc.stopped:
            proc.signal_group(signal.SIGKILL)
            proc.popen.wait()
            # Once the group is empty its id may be reused: from then on, never signal it.
            proc.stopped = _wait_group_gone(proc, TERM_GRACE)
        return proc.popen.returncode

    def terminate(self, proc: Proc, timeout: float = TERM_GRACE) -> int | None:
        """SIGTERM the group and wait up to `timeout` for it to exit by itself (a graceful
        shutdown). Returns the leader's status, or None if the group is still running, in
        which case it is left to `stop()`/`stop_all()` to kill."""
        if proc.stopped:
            return proc.popen.returncode
        proc.signal_group(signal.SIGTERM)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if not _wait_group_gone(proc, TERM_GRACE):
            return None  # children linger; the group id is still theirs, teardown kills them
        proc.stopped = True
        return proc.popen.returncode

    def stop_all(self, grace: float = TERM_GRACE) -> None:
        """Stop everything, all groups at once so a teardown takes one grace period at most."""
        stop_groups(self.procs, grace)

    def tails(self, lines: int = TAIL_LINES) -> str:
        return "\n\n".join(proc.tail(lines) for proc in self.procs)


def stop_groups(procs: Sequence[Proc], grace: float) -> list[int]:
    """SIGTERM every group, wait until each group is empty, SIGKILL what is left."""
    pending = [p for p in procs if not p.stopped]
    for proc in pending:
        proc.signal_group(signal.SIGTERM)

    def all_gone() -> bool:
        pending[:] = [p for p in pending if _still_running(p)]
        return not pending

    holds_within(all_gone, grace, interval=0.02)
    for proc in pending:
        proc.signal_group(signal.SIGKILL)
    for proc in procs:
        proc.popen.wait()
        proc.stopped = True
    return [p.popen.returncode for p in procs]


def _wait_group_gone(proc: Proc, timeout: float) -> bool:
    """Wait until no live process is left in `proc`'s group; False if some still are."""
    return holds_within(lambda: not proc.group_pids(), timeout, interval=0.02)


def _still_running(proc: Proc) -> bool:
    """The leader has not exited, or other members of its group (children) are alive."""
    return proc.popen.poll() is None or bool(proc.group_pids())
