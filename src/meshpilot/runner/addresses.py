"""Loopback addresses that no other concurrently running mesh (another `meshpilot up`, a test)
uses, so that every instance can have its own IP with the same port layout.

Linux routes all of 127.0.0.0/8 to `lo`, so any 127.X.Y.Z can be bound with no set-up, and
every address has the whole port range to itself. A user claims a block 127.X.Y.0/24 by binding
a TCP socket to the block's claim address `127.X.Y.254:CLAIM_PORT` and holding it while it runs:
the kernel refuses a second bind, so others skip the block, and a crashed process releases it
automatically. `meshpilot up` takes blocks in 127.200-254.*.*, the first free one from
127.200.0 upward, so a mesh gets the same addresses every time it runs alone; tests take blocks
in 127.100-199.*.*, from a random start so that parallel runs rarely probe the same ones. Both
ranges are clear of 127.0.0.1.
"""

from __future__ import annotations

import errno
import random
import socket

from meshpilot.errors import MeshpilotError

UP_RANGE = (200, 254)  # X of 127.X.Y.Z for `meshpilot up`
TEST_RANGE = (100, 199)  # ... and for tests
CLAIM_HOST = 254
CLAIM_PORT = 61999  # above the ephemeral range (32768-60999), so no connection takes it
HOSTS_PER_BLOCK = 250  # .1 .. .250


def up_allocator() -> LoopbackAllocator:
    """`meshpilot up`'s addresses: the first free block from 127.200.0 upward."""
    return LoopbackAllocator(UP_RANGE, start=0)


def block_count(x_range: tuple[int, int]) -> int:
    return (x_range[1] - x_range[0] + 1) * 256


def block_prefix(index: int, x_range: tuple[int, int] = TEST_RANGE) -> str:
    """`127.X.Y` of block number `index` (0 .. block_count-1) in `x_range`."""
    x, y = divmod(index % block_count(x_range), 256)
    return f"127.{x_range[0] + x}.{y}"


def try_claim(index: int, x_range: tuple[int, int] = TEST_RANGE) -> socket.socket | None:
    """The claim socket of block `index`, or None when someone else holds it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((f"{block_prefix(index, x_range)}.{CLAIM_HOST}", CLAIM_PORT))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            return None
        raise
    return sock


class LoopbackAllocator:
    """Hands out distinct loopback IPs from blocks it has claimed; `release()` frees them."""

    def __init__(self, x_range: tuple[int, int] = TEST_RANGE, start: int | None = None) -> None:
        self.x_range = x_range
        count = block_count(x_range)
        self._next_block = random.randrange(count) if start is None else start
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
        count = block_count(self.x_range)
        for _ in range(count):
            index = self._next_block
            self._next_block = (index + 1) % count
            claim = try_claim(index, self.x_range)
            if claim is not None:
                self._claims.append(claim)
                self._prefix = block_prefix(index, self.x_range)
                self._next_host = 1
                return
        low, high = self.x_range
        raise MeshpilotError(f"every loopback block 127.{low}-{high}.*.* is taken")

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
    """A port that is free on `ip` right now (on an IP of one's own block nobody else takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        port: int = sock.getsockname()[1]
        return port
