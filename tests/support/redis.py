"""A real Redis for tests (Debian's `redis-server`): on a loopback IP of the test's own, with
nothing written to disk, gone when the test ends."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterable, Iterator

import redis

from tests.support.wait import Watched, wait_for

REDIS_SERVER = "redis-server"
REDIS_PORT = 6379
START_TIMEOUT = 10.0


def redis_argv(ip: str, port: int = REDIS_PORT) -> list[str]:
    """No snapshots, no append-only file: counters live in memory only."""
    return [REDIS_SERVER, "--bind", ip, "--port", str(port), "--save", "", "--appendonly", "no"]


def answers(ip: str, port: int = REDIS_PORT) -> bool:
    with redis.Redis(host=ip, port=port, socket_connect_timeout=0.5) as client:
        return bool(client.ping())


def wait_redis(ip: str, port: int = REDIS_PORT, procs: Iterable[Watched] = ()) -> None:
    wait_for(
        lambda: answers(ip, port),
        START_TIMEOUT,
        message=f"redis on {ip}:{port}",
        ignore=(redis.RedisError, OSError),
        procs=procs,
    )


@contextlib.contextmanager
def running_redis(ip: str, port: int = REDIS_PORT) -> Iterator[subprocess.Popen[bytes]]:
    """`redis-server` on `ip:port` for the `with` block; stopped (and waited for) afterwards."""
    server = subprocess.Popen(
        redis_argv(ip, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: server.poll() is None and answers(ip, port),
            START_TIMEOUT,
            message=f"redis on {ip}:{port}",
            ignore=(redis.RedisError, OSError),
        )
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
