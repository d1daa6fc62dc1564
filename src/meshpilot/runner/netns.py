"""Network namespaces for `meshpilot up --netns`: one per instance, joined by a host bridge.

Inside its namespace an instance's app and its sidecar's admin and outbound ports bind
127.0.0.1, which nothing outside the namespace reaches; only the sidecar's inbound (mTLS) port
listens on the namespace's address on the bridge, 10.203.K.N/24, where the other instances and
the host reach it. The host's end of the bridge, 10.203.K.1, is where the namespaces reach the
control plane and the mixer. Everything is made with iproute2 and removed by `close()`; it needs
root. A SIGKILLed `up` leaves its `mp<pid>-*` namespaces and `mpbr<pid>` bridge behind
(`ip netns del NAME`, `ip link del NAME` remove them).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from meshpilot.errors import MeshpilotError

log = logging.getLogger(__name__)

LOCAL_IP = "127.0.0.1"
PREFIX = "10.203"
# Held while a subnet is picked and put on a bridge, so two concurrent runs never pick the same.
LOCK_PATH = Path("/run/meshpilot-netns.lock")
_CLONE_NEWNET = 0x40000000


def require_root() -> None:
    """`--netns` creates namespaces and links: say so plainly instead of failing half-way."""
    if os.geteuid() != 0:
        raise MeshpilotError("--netns needs root (it creates network namespaces and a bridge)")
    if shutil.which("ip") is None:
        raise MeshpilotError("--netns needs iproute2's `ip` command on PATH")


def ip(*args: str) -> str:
    """Run `ip ARGS`; a failure is a MeshpilotError with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise MeshpilotError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done.stdout


def free_subnet(in_use: str) -> str:
    """The first `10.203.K` that no address or route in `in_use` (ip's output) mentions."""
    taken = {int(k) for k in re.findall(rf"\b{re.escape(PREFIX)}\.(\d+)\.", in_use)}
    free = next((k for k in range(256) if k not in taken), None)
    if free is None:
        raise MeshpilotError(f"every subnet {PREFIX}.0-255.0/24 is in use on this host")
    return f"{PREFIX}.{free}"


def exec_argv(namespace: str, argv: list[str]) -> list[str]:
    """`argv` run inside `namespace` (ip execs it: same pid, same environment)."""
    return ["ip", "netns", "exec", namespace, *argv]


def connect(namespace: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection made from inside `namespace`, e.g. to its 127.0.0.1.

    A socket belongs to the namespace its thread was in when it was made, so only the
    `socket()` call happens in there; the thread switches back at once."""
    with open(f"/run/netns/{namespace}") as target, open("/proc/thread-self/ns/net") as home:
        _setns(target.fileno())
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(home.fileno())
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _setns(fd: int) -> None:
    if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Bridge:
    """A host bridge and one namespace per instance on it; `close()` removes them all."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.name = f"mpbr{run_id}"  # interface names have at most 15 characters
        self.subnet = ""
        self.created = False
        self.namespaces: list[str] = []
        self.veths: list[str] = []
        self._next_host = 2

    @property
    def ip(self) -> str:
        """The host's address on the bridge: the namespaces reach the host here."""
        return f"{self.subnet}.1"

    def open(self) -> None:
        with _locked(LOCK_PATH):
            self.subnet = free_subnet(ip("-o", "addr", "show") + ip("-o", "route", "show"))
            ip("link", "add", self.name, "type", "bridge")
            self.created = True
            ip("addr", "add", f"{self.ip}/24", "dev", self.name)
        ip("link", "set", self.name, "up")

    def next_ip(self) -> str:
        if self._next_host > 254:
            raise MeshpilotError(f"--netns runs at most 253 instances ({self.subnet}.0/24)")
        address = f"{self.subnet}.{self._next_host}"
        self._next_host += 1
        return address

    def add_namespace(self, label: str, address: str) -> str:
        """A namespace `mp<run>-<label>` with `address` on a veth into the bridge, `lo` up and a
        default route via the host; returns its name."""
        name = f"mp{self.run_id}-{label}"
        veth = f"mp{self.run_id}v{len(self.namespaces)}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        peer = ("peer", "name", "eth0", "netns", name)
        ip("link", "add", veth, "master", self.name, "type", "veth", *peer)
        self.veths.append(veth)
        ip("link", "set", veth, "up")
        inside = ["-n", name]
        ip(*inside, "addr", "add", f"{address}/24", "dev", "eth0")
        ip(*inside, "link", "set", "lo", "up")
        ip(*inside, "link", "set", "eth0", "up")
        ip(*inside, "route", "add", "default", "via", self.ip)
        return name

    def close(self) -> None:
        """Delete every veth pair, namespace and the bridge; call once nothing runs in the
        namespaces any more. The veths go first and explicitly: a deleted namespace takes its
        veth along only later, in the kernel's own time. Keeps going past failures, logging them."""
        for veth in self.veths:
            _quietly("link", "del", veth)
        for name in self.namespaces:
            _quietly("netns", "del", name)
        if self.created:
            _quietly("link", "del", self.name)
        self.veths.clear()
        self.namespaces.clear()
        self.created = False

    def __enter__(self) -> Bridge:
        try:
            self.open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _quietly(*args: str) -> None:
    try:
        ip(*args)
    except MeshpilotError as err:
        log.error("%s", err)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
