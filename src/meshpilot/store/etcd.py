"""The store on etcd: the registry under leases, the mesh history as keys, shared by replicas.

Keys (all under /meshpilot/):
- `registry/<replica>/<node id>`: an instance a replica holds, JSON, attached to that replica's
  lease. The lease lives LEASE_TTL_S seconds past the replica's last keep-alive: a replica that
  dies (or is cut off) loses its instances that long after, and the other replicas' watches
  remove them from every sidecar's endpoints.
- `history/<number>`: a stored mesh version (JSON); `current`: the number of the last one, which
  replicas serve.
- `keys/<name>`: what every replica must agree on (the mesh CA, the join-token key,
  `identity/shared.py`), created by the first replica in a transaction that holds only while
  the key is absent.

A replica that stops gracefully leaves its instances to its lease (they go LEASE_TTL_S later,
by which time their sidecars are registered by another replica): a sidecar elsewhere never
loses their endpoints. `close` (for tests) removes them at once.

Every call has a deadline (CALL_TIMEOUT_S); when etcd does not answer, replicas keep serving
what they last saw, say so in `health`, and retry every RETRY_S seconds until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

import aetcd
import grpc

from meshpilot.background import background
from meshpilot.bootstrap import url_host
from meshpilot.model.ir import labels_of
from meshpilot.model.locality import Locality
from meshpilot.model.proxies import Instance
from meshpilot.store.base import (
    History,
    MeshVersion,
    Registry,
    SharedKeys,
    Store,
    StoreHealth,
    StoreUnavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = b"/meshpilot/"
REGISTRY = PREFIX + b"registry/"
HISTORY = PREFIX + b"history/"
CURRENT = PREFIX + b"current"
KEYS = PREFIX + b"keys/"
LEASE_TTL_S = 6  # a dead replica's instances leave every sidecar's endpoints within this
KEEPALIVE_S = LEASE_TTL_S / 3
CALL_TIMEOUT_S = 2
RETRY_S = 0.5
TXN_OPS = 100  # etcd allows 128 operations in one transaction by default
# What a call to an unreachable or failing etcd raises.
STORE_ERRORS = (aetcd.ClientError, grpc.RpcError, TimeoutError, OSError)


def etcd_client(endpoints: Sequence[tuple[str, int]]) -> aetcd.Client:
    """One client for every member: gRPC spreads calls over the members that answer and leaves
    out the ones that do not (round robin over an `ipv4:`/`ipv6:` target of all of them)."""
    host, port = endpoints[-1]
    if len(endpoints) > 1:  # aetcd dials f"{host}:{port}": the others go before the last host
        family = "ipv6" if ":" in host else "ipv4"
        others = ",".join(_host_port(h, p) for h, p in endpoints[:-1])
        host = f"{family}:{others},{url_host(host)}"
    options = {
        "grpc.lb_policy_name": "round_robin",
        "grpc.keepalive_time_ms": 5_000,  # etcd's least allowed interval
        "grpc.keepalive_timeout_ms": 2_000,
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 1_000,
    }
    return aetcd.Client(host, port, timeout=CALL_TIMEOUT_S, options=options)


def _host_port(host: str, port: int) -> str:
    return f"{url_host(host)}:{port}"


class EtcdStore(Store):
    shared = True

    def __init__(self, url: str, endpoints: Sequence[tuple[str, int]]) -> None:
        self.url = url
        self.health = StoreHealth()
        self.client = etcd_client(endpoints)
        self._history = EtcdHistory(self)
        self._keys = EtcdKeys(self)

    def registry(self, replica: str) -> Registry:
        return EtcdRegistry(self, replica)

    @property
    def history(self) -> History:
        return self._history

    @property
    def keys(self) -> SharedKeys:
        return self._keys

    async def call(self, doing: str, call: Awaitable[T]) -> T:
        """`call`'s answer; an etcd that does not answer is one clear StoreUnavailable."""
        try:
            return await call
        except STORE_ERRORS as err:
            raise StoreUnavailable(
                f"etcd {self.url} did not answer while {doing}: {_why(err)}"
            ) from None

    async def close(self) -> None:
        await self.client.close()

    def failed(self, doing: str, err: BaseException) -> None:
        """Note a failed call (logged once per outage)."""
        if self.health.connected:
            log.warning("etcd %s: %s while %s; serving the last state", self.url, _why(err), doing)
        self.health.failed(f"{doing}: {_why(err)}")

    def answered(self) -> None:
        if not self.health.connected:
            log.info("etcd %s answers again", self.url)
        self.health.ok()


def _why(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class EtcdRegistry(Registry):
    """What this replica holds is written by one task: under a lease of its own, kept alive;
    after an outage that cost the lease, everything is written again under a new one."""

    def __init__(self, store: EtcdStore, replica: str) -> None:
        self._store = store
        self._prefix = REGISTRY + replica.encode() + b"/"
        self._wanted: dict[str, Instance] = {}
        self._changed = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._leaving = False

    def register(self, node_id: str, instance: Instance) -> None:
        if not self._leaving:
            self._wanted[node_id] = instance
            self._wake_writer()

    def deregister(self, node_id: str) -> None:
        if not self._leaving and self._wanted.pop(node_id, None) is not None:
            self._wake_writer()

    def _wake_writer(self) -> None:
        self._changed.set()
        if self._writer is None:
            self._writer = background(self._write_forever(), "registry writer")

    async def _write_forever(self) -> None:
        while True:
            try:
                await self._hold_under_one_lease()
            except STORE_ERRORS as err:
                self._store.failed("holding the registry", err)
                await asyncio.sleep(RETRY_S)

    async def _hold_under_one_lease(self) -> None:
        """Grant a lease, then keep writing what changed and renewing the lease every
        KEEPALIVE_S (however often things change), until a call fails or the lease is gone."""
        client = self._store.client
        loop = asyncio.get_running_loop()
        lease = await client.lease(LEASE_TTL_S)
        renew_at = loop.time() + KEEPALIVE_S
        written: dict[str, Instance] = {}
        while True:
            await self._write_changes(client, lease.id, written)
            self._store.answered()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, renew_at - loop.time())):
                    await self._changed.wait()
            if loop.time() < renew_at:
                continue
            reply = await client.refresh_lease(lease.id)
            if reply is None or reply.TTL <= 0:
                log.warning("registry lease expired; writing every instance again")
                return
            renew_at = loop.time() + KEEPALIVE_S

    async def _write_changes(
        self, client: aetcd.Client, lease: int, written: dict[str, Instance]
    ) -> None:
        """Make etcd hold what is wanted, in transactions of up to TXN_OPS changes (thousands
        of sidecars on one replica are written again after an outage in a few calls)."""
        self._changed.clear()
        wanted = dict(self._wanted)
        ops: list[Any] = [
            client.transactions.delete(self._key(node_id))
            for node_id in written
            if node_id not in wanted
        ]
        ops += [
            client.transactions.put(self._key(node_id), encode_instance(instance), lease)
            for node_id, instance in wanted.items()
            if written.get(node_id) != instance
        ]
        for start in range(0, len(ops), TXN_OPS):
            await client.transaction([], ops[start : start + TXN_OPS], [])
        written.clear()
        written.update(wanted)

    def _key(self, node_id: str) -> bytes:
        return self._prefix + node_id.encode()

    async def others(self) -> AsyncIterator[frozenset[Instance]]:
        last: frozenset[Instance] | None = None
        while True:
            try:
                async for found in self._watch():
                    if found != last:
                        last = found
                        yield found
            except STORE_ERRORS as err:
                self._store.failed("watching the registry", err)
                await asyncio.sleep(RETRY_S)

    async def _watch(self) -> AsyncIterator[frozenset[Instance]]:
        """Read every other replica's instances, then follow the changes from that revision."""
        client = self._store.client
        listing = await client.get_prefix(REGISTRY)
        held = {kv.key: decode_instance(kv.value) for kv in listing if self._theirs(kv.key)}
        self._store.answered()
        yield frozenset(held.values())
        watch = await client.watch_prefix(REGISTRY, start_revision=listing.header.revision + 1)
        async for event in watch:
            if not self._theirs(event.kv.key):
                continue
            if event.kind == aetcd.EventKind.PUT:
                held[event.kv.key] = decode_instance(event.kv.value)
            else:
                held.pop(event.kv.key, None)
            yield frozenset(held.values())

    def _theirs(self, key: bytes) -> bool:
        return not key.startswith(self._prefix)

    async def close(self) -> None:
        await self.leave()
        try:
            await self._store.client.delete_prefix(self._prefix)
        except STORE_ERRORS as err:
            log.warning("could not remove this replica's instances (its lease will): %s", err)

    async def leave(self) -> None:
        self._leaving = True
        if self._writer is not None:
            self._writer.cancel()


def encode_instance(instance: Instance) -> bytes:
    """An instance as the registry stores it: every field, so that every replica translates
    exactly what the one holding it would."""
    locality = instance.locality
    return json.dumps(
        {
            "service": instance.service,
            "address": instance.address,
            "port": instance.port,
            "labels": dict(instance.labels),
            "locality": None if locality is None else str(locality),
        },
        sort_keys=True,
    ).encode()


def decode_instance(value: bytes) -> Instance:
    data: dict[str, Any] = json.loads(value)
    locality = data.get("locality")
    return Instance(
        data["service"],
        data["address"],
        data["port"],
        labels_of(data["labels"]),
        None if locality is None else Locality.parse(locality),
    )


class EtcdHistory(History):
    """Versions under `history/<number>` (JSON); `current` holds the last one's number. A new
    version and `current` are written in one transaction that holds only if `current` was
    written exactly `number - 1` times before (its etcd version): of two appends at once, one
    fails and takes the next number."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store

    async def _commit(self, version: MeshVersion) -> bool:
        client = self._store.client
        ops = client.transactions
        written, _ = await self._store.call(
            "storing a mesh version",
            client.transaction(
                compare=[ops.version(CURRENT) == version.number - 1],
                success=[
                    ops.put(_history_key(version.number), _encode_version(version)),
                    ops.put(CURRENT, str(version.number).encode()),
                ],
                failure=[],
            ),
        )
        return bool(written)

    async def latest(self) -> MeshVersion | None:
        found = await self._store.call(
            "reading the current mesh version", self._store.client.get(CURRENT)
        )
        return None if found is None else await self.get(int(found.value))

    async def versions(self) -> list[MeshVersion]:
        listing = await self._store.call(
            "reading the mesh history", self._store.client.get_prefix(HISTORY)
        )
        return sorted((_decode_version(kv.value) for kv in listing), key=lambda v: v.number)

    async def get(self, number: int) -> MeshVersion | None:
        found = await self._store.call(
            "reading a mesh version", self._store.client.get(_history_key(number))
        )
        return None if found is None else _decode_version(found.value)

    async def current(self) -> AsyncIterator[MeshVersion]:
        last: MeshVersion | None = None
        while True:
            try:
                async for version in self._follow():
                    if version != last:
                        last = version
                        yield version
            except (*STORE_ERRORS, StoreUnavailable) as err:
                self._store.failed("watching the mesh history", err)
                await asyncio.sleep(RETRY_S)

    async def _follow(self) -> AsyncIterator[MeshVersion]:
        """The current version, then each new one, from one read and the watch after it."""
        client = self._store.client
        listing = await client.get_prefix(CURRENT)  # has the revision even with no key yet
        self._store.answered()
        for kv in listing:
            if (version := await self.get(int(kv.value))) is not None:
                yield version
        watch = await client.watch(CURRENT, start_revision=listing.header.revision + 1)
        async for event in watch:
            if event.kind != aetcd.EventKind.PUT:
                continue
            if (version := await self.get(int(event.kv.value))) is not None:
                yield version


class EtcdKeys(SharedKeys):
    """Shared keys under `keys/<name>`, with no lease: they outlive every replica."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store

    async def setdefault(self, name: str, value: bytes) -> bytes:
        client, key = self._store.client, KEYS + name.encode()
        ops = client.transactions
        created, replies = await self._store.call(
            f"storing the shared {name}",
            client.transaction(
                compare=[ops.version(key) == 0],
                success=[ops.put(key, value)],
                failure=[ops.get(key)],
            ),
        )
        if created:
            return value
        [(stored, _)] = replies[0]
        return bytes(stored)

    async def get(self, name: str) -> bytes | None:
        found = await self._store.call(
            f"reading the shared {name}", self._store.client.get(KEYS + name.encode())
        )
        return None if found is None else bytes(found.value)

    async def put(self, name: str, value: bytes) -> None:
        await self._store.call(
            f"storing the shared {name}", self._store.client.put(KEYS + name.encode(), value)
        )

    async def names(self, prefix: str) -> AsyncIterator[frozenset[str]]:
        last: frozenset[str] | None = None
        while True:
            try:
                async for found in self._follow_names(KEYS + prefix.encode()):
                    if found != last:
                        last = found
                        yield found
            except STORE_ERRORS as err:
                self._store.failed(f"watching the shared {prefix}", err)
                await asyncio.sleep(RETRY_S)

    async def _follow_names(self, prefix: bytes) -> AsyncIterator[frozenset[str]]:
        """The names under `prefix`, from one read and the watch after it."""
        client = self._store.client
        listing = await client.get_prefix(prefix)
        held = {kv.key.removeprefix(prefix).decode() for kv in listing}
        self._store.answered()
        yield frozenset(held)
        watch = await client.watch_prefix(prefix, start_revision=listing.header.revision + 1)
        async for event in watch:
            name = event.kv.key.removeprefix(prefix).decode()
            if event.kind == aetcd.EventKind.PUT:
                held.add(name)
            else:
                held.discard(name)
            yield frozenset(held)


def _history_key(number: int) -> bytes:
    return HISTORY + str(number).encode()


def _encode_version(version: MeshVersion) -> bytes:
    fields = asdict(version)
    fields["content"] = version.content.decode("utf-8", "replace")
    return json.dumps(fields).encode()


def _decode_version(value: bytes) -> MeshVersion:
    fields: dict[str, Any] = json.loads(value)
    fields["content"] = fields["content"].encode()
    return MeshVersion(**fields)
