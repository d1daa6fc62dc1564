"""The mixer as processes: workers share the gRPC port, the parent aggregates what they receive,
and a worker that dies is restarted. Plaintext (`--insecure`): the mTLS of workers is checked
end to end with real sidecars."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from envoy.service.accesslog.v3 import als_pb2
from envoy.service.auth.v3 import external_auth_pb2_grpc

from meshpilot.mixer import Mixer
from tests.conftest import free_port
from tests.support.wait import wait_for_async
from tests.test_mixer_services import check_request, http_entry, identifier, send_logs

MESH = """\
mesh: m
services:
  frontend: {port: 9080}
  ratings: {port: 9080, subsets: {v2: {version: v2}}}
"""


@pytest.fixture
async def mixer(tmp_path: Path) -> AsyncIterator[Mixer]:
    (tmp_path / "mesh.yaml").write_text(MESH)
    running = Mixer(
        tmp_path / "mesh.yaml", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", workers=2
    )
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    yield running
    stop.set()
    await asyncio.wait_for(task, 15)


async def checks_pass(address: str) -> bool:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            reply = await stub.Check(check_request("/"), timeout=1)
            return bool(reply.status.code == 0)
    except grpc.aio.AioRpcError:
        return False


async def test_entries_from_any_worker_are_counted_once_by_the_parent(mixer: Mixer) -> None:
    await wait_for_async(lambda: checks_pass(mixer.listen), 15)
    for _ in range(6):  # separate connections: the kernel spreads them over the workers
        message = als_pb2.StreamAccessLogsMessage(
            identifier=identifier("frontend", "v1", "outbound")
        )
        message.http_logs.log_entry.extend([http_entry(200, "outbound|9080||ratings")] * 5)
        await send_logs(grpc.aio.insecure_channel(mixer.listen), [message])

    async def all_counted() -> bool:
        labels = {
            "reporter": "source",
            "source_service": "frontend",
            "destination_service": "ratings",
            "destination_version": "v2",
            "response_code": "200",
        }
        return mixer.metrics.registry.get_sample_value("mesh_requests_total", labels) == 30

    await wait_for_async(all_counted, 5)


async def test_a_killed_worker_is_restarted(mixer: Mixer) -> None:
    await wait_for_async(lambda: checks_pass(mixer.listen), 15)
    victim = mixer.worker_pids()[0]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> bool:
        current = mixer.worker_pids()[0]
        return current is not None and current != victim

    await wait_for_async(replaced, 15)
    await wait_for_async(lambda: checks_pass(mixer.listen), 15)


def listening_pids(port: int, pids: list[int]) -> set[int]:
    """Which of `pids` hold a listening TCP socket on `port` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{pid}/fd").iterdir()
            if any(os.readlink(fd) in inodes for fd in fds):
                holders.add(pid)
    return holders


async def test_the_first_workers_all_listen_without_a_restart(mixer: Mixer) -> None:
    async def started() -> bool:
        return None not in mixer.worker_pids()

    await wait_for_async(started, 15)
    first = [pid for pid in mixer.worker_pids() if pid is not None]
    port = int(mixer.listen.rpartition(":")[2])

    async def all_listening() -> bool:
        return listening_pids(port, first) == set(first)

    await wait_for_async(all_listening, 15)
    assert mixer.worker_pids() == first


def children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


async def test_workers_die_with_a_killed_parent_and_a_new_mixer_owns_the_port(
    tmp_path: Path,
) -> None:
    """kill -9 of the mixer's parent used to leave its workers holding the port: a restarted
    mixer then shared it with workers whose entries nobody counted."""
    (tmp_path / "mesh.yaml").write_text(MESH)
    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "meshpilot", "mixer", str(tmp_path / "mesh.yaml"), "--insecure"]
    argv += ["--listen", listen, "--metrics", metrics, "--workers", "2"]
    parent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_for_async(lambda: checks_pass(listen), 20)
        workers = children(parent.pid)
        port = int(listen.rpartition(":")[2])
        assert listening_pids(port, workers)  # the workers hold the port
        parent.kill()
        parent.wait()
        await wait_for_async(lambda: not any(alive(w) for w in workers), 10, message="workers")
    finally:
        parent.kill()
        for pid in children(parent.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    restarted = Mixer(tmp_path / "mesh.yaml", listen, metrics, workers=1)
    stop = asyncio.Event()
    task = asyncio.create_task(restarted.run(stop))
    try:
        await wait_for_async(lambda: checks_pass(listen), 15)
        assert listening_pids(port, [p for p in restarted.worker_pids() if p]) and not any(
            alive(w) for w in workers
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
