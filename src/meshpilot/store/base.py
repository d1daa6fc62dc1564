"""The store's interface: the registry of instances and the mesh history, whatever holds them.

A replica registers the instances whose sidecars stream to it and watches those every other
replica holds; the translator serves the union. The mesh history is the list of stored mesh
versions and which one is current. `memory` keeps both in one process (the default: one
control plane, or several in one test); `etcd` shares them between replicas.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from meshpilot.model.proxies import Instance


@dataclass(frozen=True)
class MeshVersion:
    """One stored mesh file: its content hash (the version), the text, who stored it and when."""

    version: str
    content: bytes
    author: str
    created_at: float


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


class History(ABC):
    """The stored mesh versions and which one replicas serve."""

    @abstractmethod
    async def put(self, version: MeshVersion) -> None:
        """Store `version` and make it the current one."""

    @abstractmethod
    async def versions(self) -> list[MeshVersion]:
        """Every stored version, oldest first."""

    @abstractmethod
    async def get(self, version: str) -> MeshVersion | None:
        """The stored version named `version`, or None."""

    @abstractmethod
    def current(self) -> AsyncIterator[MeshVersion]:
        """The current version (if any), then each new current one."""


class Store(ABC):
    """The registry and the mesh history behind one connection."""

    url: str
    health: StoreHealth
    shared: bool  # with other processes (replicas): reported by the admin API

    @abstractmethod
    def registry(self, replica: str) -> Registry:
        """The registry as replica `replica` (a name unique to this process) sees it."""

    @property
    @abstractmethod
    def history(self) -> History: ...

    @abstractmethod
    async def close(self) -> None: ...
