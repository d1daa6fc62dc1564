"""Loopback addresses that no other concurrently running test uses.

Linux routes all of 127.0.0.0/8 to `lo`, so any 127.X.Y.Z can be bound with no set-up, and
every address has the whole port range to itself. A test claims a block 127.X.Y.0/24 by binding
a TCP socket to the block's claim address `127.X.Y.254:CLAIM_PORT` and holding it until the test
ends: the kernel refuses a second bind, so other xdist workers and other pytest runs skip the
block, and a crashed run releases it automatically. Blocks live in 127.100-199.*.* to stay clear
of 127.0.0.1 and of `meshpilot up` (which uses 127.0.*.*).
"""

from __future__ import annotations

import errno
import random
import socket

FIRST_X, LAST_X = 100, 199
CLAIM_HOST = 254
CLAIM_PORT = 61999  # above the ephemeral range (32768-60999), so no connection takes it
HOSTS_PER_BLOCK = 250  # .1 .. .250
BLOCK_COUNT = (LAST_X - FIRST_X + 1) * 256


def block_prefix(index: int) -> str:
    """`127.X.Y` of block number `index` (0 .. BLOCK_COUNT-1)."""
    x, y = divmod(index % BLOCK_COUNT, 256)
    return f"127.{FIRST_X + x}.{y}"


def try_claim(index: int) -> socket.socket | None:
    """The claim socket of block `index`, or None when someone else holds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((f"{block_prefix(index)}.{CLAIM_HOST}", CLAIM_PORT))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            return None
        raise
    return sock


class LoopbackAllocator:
    """Hands out distinct loopback IPs from blocks it has claimed; `release()` frees them."""

    def __init__(self, start: int | None = None) -> None:
        self._next_block = random.randrange(BLOCK_COUNT) if start is None else start
        self._claims: list[socket.socket] = []
        self._prefix = ""
        self._next_host = HOSTS_PER_BLOCK + 1
        self.handed_out: list[str] = []

    def ip(self) -> str:
        """A fresh address; claims another block when the current one is used up."""
        if self._next_host > HOSTS_PER_BLOCK:
            self._claim_block()
        address = f"{self._prefix}.{self._next_host}"
        self._next_host += 1
        self.handed_out.append(address)
        return address

    def ips(self, count: int) -> list[str]:
        return [self.ip() for _ in range(count)]

    def _claim_block(self) -> None:
        for _ in range(BLOCK_COUNT):
            index = self._next_block
            self._next_block = (index + 1) % BLOCK_COUNT
            claim = try_claim(index)
            if claim is not None:
                self._claims.append(claim)
                self._prefix = block_prefix(index)
                self._next_host = 1
                return
        raise RuntimeError("every loopback block 127.100-199.*.* is claimed")

    @property
    def blocks(self) -> list[str]:
        """`127.X.Y` prefixes held by this allocator."""
        return [sock.getsockname()[0].rsplit(".", 1)[0] for sock in self._claims]

    def release(self) -> None:
        """Give the blocks back; call only once nothing listens on their addresses any more."""
        for sock in self._claims:
            sock.close()
        self._claims.clear()
        self._next_host = HOSTS_PER_BLOCK + 1


def free_port(ip: str) -> int:
    """A port that is free on `ip` right now (on a test's own IP nobody else will take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port
