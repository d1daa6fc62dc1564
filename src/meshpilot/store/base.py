"""The store's interface: the registry of instances and the mesh history, whatever holds them.

A replica registers the instances whose sidecars stream to it and watches those every other
replica holds; the translator serves the union. The mesh history is the list of stored mesh
versions and which one is current. `memory` keeps both in one process (the default: one
control plane, or several in one test); `etcd` shares them between replicas.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from meshpilot.errors import MeshpilotError
from meshpilot.model.proxies import Instance


@dataclass(frozen=True)
class MeshVersion:
    """One stored mesh file: its number in the history, its content hash (what `/mesh` calls its
    version), the text, the file it was read from (problems name it; relative paths in it resolve
    from its directory), who stored it, when, and why if not a plain apply ("rollback to 2")."""

    number: int
    digest: str
    content: bytes
    source: str
    author: str
    created_at: float
    note: str = ""


def content_digest(content: bytes) -> str:
    """The version of a mesh file's content: equal contents, equal versions, on every replica."""
    return hashlib.blake2b(content, digest_size=8).hexdigest()


def who() -> str:
    """`user@host`: who stores a version when `--author` does not say."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


class StoreUnavailable(MeshpilotError):
    """The store did not answer a call (`apply`, `history`, `rollback` say so in one line)."""


class UnknownVersion(MeshpilotError):
    """A rollback to a version the history does not hold."""


@dataclass
class StoreHealth:
    """Whether the store last answered, and if not, why and since when (admin `/healthz`)."""

    connected: bool = True
    error: str | None = None
    since: float = field(default_factory=time.time)

    def ok(self) -> None:
        if not self.connected:
            self.connected, self.error, self.since = True, None, time.time()

    def failed(self, error: str) -> None:
        if self.connected:
            self.since = time.time()
        self.connected, self.error = False, error


class Registry(ABC):
    """One replica's part of the registry: the instances it holds, and everyone else's."""

    @abstractmethod
    def register(self, node_id: str, instance: Instance) -> None:
        """Hold `instance` (of the sidecar `node_id`) for as long as this replica lives; written
        in the background (an unreachable store is caught up with later)."""

    @abstractmethod
    def deregister(self, node_id: str) -> None:
        """Stop holding the instance of `node_id` (its stream ended)."""

    @abstractmethod
    def others(self) -> AsyncIterator[frozenset[Instance]]:
        """The instances every other replica holds: now, then each time that changes. While
        the store is unreachable nothing is yielded (the last answer stands)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop holding anything (in a shared store, the instances go at once)."""

    @abstractmethod
    async def leave(self) -> None:
        """Stop holding anything, for a graceful stop: in a shared store the instances stay
        until this replica's lease expires, while their sidecars move to another replica, so
        no sidecar's endpoints lose them meanwhile. Later deregistrations change nothing."""


class History(ABC):
    """The stored mesh versions, numbered from 1; the last one is the current one, which
    replicas serve. A rollback is one more version, with an older one's content (as Helm's)."""

    async def append(
        self, content: bytes, source: str, author: str, note: str = ""
    ) -> tuple[MeshVersion, bool]:
        """Store `content` as the next version, unless the current one has the same content:
        (the current version, whether it is new). Two appends at once never take one number:
        the one that loses the race reads the history again and takes the next."""
        digest = content_digest(content)
        while True:
            current = await self.latest()
            if current is not None and current.digest == digest:
                return current, False
            number = 1 if current is None else current.number + 1
            version = MeshVersion(number, digest, content, source, author, time.time(), note)
            if await self._commit(version):
                return version, True

    async def rollback(self, number: int, author: str) -> tuple[MeshVersion, bool]:
        """Make version `number`'s content current again, as a new version "rollback to N"
        (nothing new when it is the current content already)."""
        old = await self.get(number)
        if old is None:
            latest = await self.latest()
            held = f"versions 1 to {latest.number}" if latest else "no version yet"
            raise UnknownVersion(f"no version {number} in the mesh history (it holds {held})")
        return await self.append(old.content, old.source, author, f"rollback to {number}")

    @abstractmethod
    async def _commit(self, version: MeshVersion) -> bool:
        """Store `version` only if the history's last number is still `version.number - 1`
        (atomically): whether it was stored."""

    @abstractmethod
    async def latest(self) -> MeshVersion | None:
        """The current version, None while the history is empty."""

    @abstractmethod
    async def versions(self) -> list[MeshVersion]:
        """Every stored version, oldest first."""

    @abstractmethod
    async def get(self, number: int) -> MeshVersion | None:
        """Version `number`, or None."""

    @abstractmethod
    def current(self) -> AsyncIterator[MeshVersion]:
        """The current version (if any), then each new current one. While the store is
        unreachable nothing is yielded (the last answer stands)."""


class SharedKeys(ABC):
    """Small values that every replica must agree on (the mesh CA, the join-token key): the
    first one stored under a name is the one every replica gets."""

    @abstractmethod
    async def setdefault(self, name: str, value: bytes) -> bytes:
        """The value stored under `name`, storing `value` first if there is none (atomically:
        of two replicas storing at once, both get the winner's)."""

    @abstractmethod
    async def get(self, name: str) -> bytes | None: ...

    @abstractmethod
    async def put(self, name: str, value: bytes) -> None: ...

    @abstractmethod
    def names(self, prefix: str) -> AsyncIterator[frozenset[str]]:
        """The names stored under `prefix` (without it): now, then each time they change.
        While the store is unreachable nothing is yielded (the last answer stands)."""


class Store(ABC):
    """The registry, the mesh history and the shared keys behind one connection."""

    url: str
    health: StoreHealth
    shared: bool  # with other processes (replicas): reported by the admin API

    @abstractmethod
    def registry(self, replica: str) -> Registry:
        """The registry as replica `replica` (a name unique to this process) sees it."""

    @property
    @abstractmethod
    def history(self) -> History: ...

    @property
    @abstractmethod
    def keys(self) -> SharedKeys: ...

    @abstractmethod
    async def close(self) -> None: ...
