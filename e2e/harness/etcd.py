"""Real etcd for tests (Debian's `etcd-server`): one member or a cluster of three, each member on
a loopback IP of the test's own with its own data directory, stopped with the test's other
processes (the `processes` fixture), pass or fail.

    def test_x(etcd: EtcdCluster) -> None:          # one member
        serve(..., "--store", etcd.url)
    def test_y(etcd_cluster: EtcdCluster) -> None:  # three
        etcd_cluster.kill(etcd_cluster.members[0])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.processes import Proc, Processes
from harness.wait import http_json, wait_for
from meshpilot.runner.addresses import LoopbackAllocator
from meshpilot.runner.etcd import CLIENT_PORT, client_url, etcd_argv

START_TIMEOUT = 20.0


@dataclass
class EtcdMember:
    name: str
    ip: str
    data_dir: Path
    proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{CLIENT_PORT}"

    def healthy(self) -> bool:
        """etcd's own /health: true once the member is part of a cluster with a leader."""
        return bool(http_json(f"{client_url(self.ip)}/health").get("health") == "true")


@dataclass
class EtcdCluster:
    processes: Processes
    members: list[EtcdMember] = field(default_factory=list)

    @property
    def url(self) -> str:
        """`--store` for every member: etcd://IP:2379,IP:2379,..."""
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def start(self) -> None:
        """Every member, then wait until each reports healthy (a cluster elected a leader)."""
        for member in self.members:
            self.start_member(member, wait=False)
        self.wait_healthy(self.members)

    def start_member(self, member: EtcdMember, *, wait: bool = True) -> None:
        """Start (or restart, on its data directory) one member."""
        member.proc = self.processes.start(f"etcd-{member.name}", self._argv(member))
        if wait:
            self.wait_healthy([member])

    def kill(self, member: EtcdMember) -> None:
        """SIGKILL one member, like a crash."""
        assert member.proc is not None
        self.processes.kill(member.proc)

    def wait_healthy(self, members: Iterable[EtcdMember], timeout: float = START_TIMEOUT) -> None:
        wanted = list(members)
        wait_for(
            lambda: all(m.healthy() for m in wanted),
            timeout,
            message=f"etcd {[m.name for m in wanted]} healthy",
            ignore=(OSError, ValueError),
            procs=[m.proc for m in wanted if m.proc is not None],
        )

    def _argv(self, member: EtcdMember) -> list[str]:
        return etcd_argv(member.name, member.data_dir, {m.name: m.ip for m in self.members})


def start_etcd(
    processes: Processes, ips: LoopbackAllocator, tmp: Path, size: int = 1
) -> EtcdCluster:
    """A running etcd of `size` members, each on its own loopback IP."""
    members = [EtcdMember(f"m{i}", ips.ip(), tmp / f"etcd-m{i}") for i in range(size)]
    cluster = EtcdCluster(processes, members)
    cluster.start()
    return cluster
