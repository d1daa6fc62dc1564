"""The store in this process's memory: the default, and several replicas in one test.

Nothing outlives the process; replicas sharing one MemoryStore see each other's instances at
once, as replicas on etcd do within a watch's delay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from meshpilot.model.proxies import Instance
from meshpilot.store.base import (
    History,
    MeshVersion,
    Registry,
    SharedKeys,
    Store,
    StoreHealth,
)


class _Changes:
    """Wakes every waiter after a change (each waiter has an event of its own)."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Event] = set()

    def notify(self) -> None:
        for event in self._waiters:
            event.set()

    async def each(self) -> AsyncIterator[None]:
        """Now, then after each change (changes while the consumer is busy are merged)."""
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            while True:
                yield
                await event.wait()
                event.clear()
        finally:
            self._waiters.discard(event)


class MemoryStore(Store):
    shared = False

    def __init__(self) -> None:
        self.url = "memory"
        self.health = StoreHealth()
        self.held: dict[str, dict[str, Instance]] = {}  # replica -> node id -> instance
        self.registry_changes = _Changes()
        self._history = MemoryHistory()
        self._keys = MemoryKeys()

    def registry(self, replica: str) -> Registry:
        return MemoryRegistry(self, replica)

    @property
    def history(self) -> History:
        return self._history

    @property
    def keys(self) -> SharedKeys:
        return self._keys

    async def close(self) -> None:
        self.held.clear()
        self.registry_changes.notify()


class MemoryRegistry(Registry):
    def __init__(self, store: MemoryStore, replica: str) -> None:
        self._store = store
        self._replica = replica

    def register(self, node_id: str, instance: Instance) -> None:
        self._store.held.setdefault(self._replica, {})[node_id] = instance
        self._store.registry_changes.notify()

    def deregister(self, node_id: str) -> None:
        if self._store.held.get(self._replica, {}).pop(node_id, None) is not None:
            self._store.registry_changes.notify()

    async def others(self) -> AsyncIterator[frozenset[Instance]]:
        last: frozenset[Instance] | None = None
        async for _ in self._store.registry_changes.each():
            found = frozenset(
                instance
                for replica, held in self._store.held.items()
                if replica != self._replica
                for instance in held.values()
            )
            if found != last:
                last = found
                yield found

    async def close(self) -> None:
        if self._store.held.pop(self._replica, None):
            self._store.registry_changes.notify()

    async def leave(self) -> None:
        """No lease to wait for in one process: the instances go at once."""
        await self.close()


class MemoryKeys(SharedKeys):
    def __init__(self) -> None:
        self._values: dict[str, bytes] = {}
        self._changes = _Changes()

    async def setdefault(self, name: str, value: bytes) -> bytes:
        stored = self._values.setdefault(name, value)
        self._changes.notify()
        return stored

    async def get(self, name: str) -> bytes | None:
        return self._values.get(name)

    async def put(self, name: str, value: bytes) -> None:
        self._values[name] = value
        self._changes.notify()

    async def names(self, prefix: str) -> AsyncIterator[frozenset[str]]:
        last: frozenset[str] | None = None
        async for _ in self._changes.each():
            found = frozenset(n.removeprefix(prefix) for n in self._values if n.startswith(prefix))
            if found != last:
                last = found
                yield found


class MemoryHistory(History):
    def __init__(self) -> None:
        self._versions: list[MeshVersion] = []
        self._changes = _Changes()

    async def _commit(self, version: MeshVersion) -> bool:
        if len(self._versions) != version.number - 1:
            return False
        self._versions.append(version)
        self._changes.notify()
        return True

    async def latest(self) -> MeshVersion | None:
        return self._versions[-1] if self._versions else None

    async def versions(self) -> list[MeshVersion]:
        return list(self._versions)

    async def get(self, number: int) -> MeshVersion | None:
        return self._versions[number - 1] if 0 < number <= len(self._versions) else None

    async def current(self) -> AsyncIterator[MeshVersion]:
        last: MeshVersion | None = None
        async for _ in self._changes.each():
            latest = await self.latest()
            if latest is not None and latest is not last:
                last = latest
                yield last
