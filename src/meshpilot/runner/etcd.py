"""Running Debian's etcd (`etcd-server`) locally: `up --replicas` starts one member for its
control planes, and the e2e tests start one or three the same way."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from meshpilot.errors import MeshpilotError

ETCD = "etcd"
CLIENT_PORT, PEER_PORT = 2379, 2380


def etcd_binary() -> str:
    """The `etcd` on PATH, or a one-line error saying how to get it."""
    found = shutil.which(ETCD)
    if found is None:
        raise MeshpilotError("etcd is not installed (Debian/Ubuntu: apt-get install etcd-server)")
    return found


def client_url(ip: str) -> str:
    return f"http://{ip}:{CLIENT_PORT}"


def peer_url(ip: str) -> str:
    return f"http://{ip}:{PEER_PORT}"


def etcd_argv(name: str, data_dir: Path, members: Mapping[str, str]) -> list[str]:
    """Member `name` of a new cluster of `members` (name -> IP, its own among them), clients
    on IP:2379, peers on IP:2380, data in `data_dir` (restarting it there rejoins)."""
    ip = members[name]
    cluster = ",".join(f"{member}={peer_url(address)}" for member, address in members.items())
    return [
        etcd_binary(),
        *("--name", name, "--data-dir", str(data_dir)),
        *("--listen-client-urls", client_url(ip), "--advertise-client-urls", client_url(ip)),
        *("--listen-peer-urls", peer_url(ip), "--initial-advertise-peer-urls", peer_url(ip)),
        *("--initial-cluster", cluster, "--initial-cluster-state", "new"),
        *("--initial-cluster-token", f"meshpilot-{min(members.values())}"),
        *("--log-level", "warn"),
    ]
