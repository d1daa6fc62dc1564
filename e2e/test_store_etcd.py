"""The etcd store against real etcd: replicas see each other's instances, lose a dead replica's
when its lease expires, and go on through the loss of one member of three."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

from harness.etcd import EtcdCluster
from harness.processes import Processes

from meshpilot.model.proxies import Instance
from meshpilot.store import open_store
from meshpilot.store.base import MeshVersion
from meshpilot.store.etcd import KEEPALIVE_S, LEASE_TTL_S, EtcdStore
from tests.support.wait import wait_for_async

A = Instance("reviews", "127.0.0.5", 15006, (("version", "v1"),))
B = Instance("ratings", "127.0.0.6", 15006, ())


class Seen:
    """The latest answer of a registry's `others()`, read in the background."""

    def __init__(self, updates: AsyncIterator[frozenset[Instance]]) -> None:
        self.updates = updates
        self.latest: frozenset[Instance] | None = None

    async def follow(self) -> None:
        async for found in self.updates:
            self.latest = found


def etcd_store(url: str) -> EtcdStore:
    store = open_store(url)
    assert isinstance(store, EtcdStore)
    return store


async def test_replicas_see_each_others_instances_and_not_their_own(etcd: EtcdCluster) -> None:
    first, second = etcd_store(etcd.url), etcd_store(etcd.url)
    one, two = first.registry("one"), second.registry("two")
    seen_by_two = Seen(two.others())
    seen_by_one = Seen(one.others())
    tasks = [asyncio.create_task(s.follow()) for s in (seen_by_one, seen_by_two)]
    try:
        one.register("reviews~127.0.0.5", A)
        two.register("ratings~127.0.0.6", B)
        await wait_for_async(lambda: seen_by_two.latest == {A}, 10, message="two sees A")
        await wait_for_async(lambda: seen_by_one.latest == {B}, 10, message="one sees B")
        one.deregister("reviews~127.0.0.5")
        await wait_for_async(lambda: seen_by_two.latest == frozenset(), 10, message="A gone")
        assert first.health.connected and second.health.connected
    finally:
        for task in tasks:
            task.cancel()
        await one.close()
        await two.close()
        await first.close()
        await second.close()


HOLDER = """
import asyncio, sys
from meshpilot.model.proxies import Instance
from meshpilot.store import open_store

async def hold() -> None:
    store = open_store(sys.argv[1])
    store.registry("holder").register("reviews~127.0.0.5", Instance(*{instance!r}))
    await asyncio.Event().wait()

asyncio.run(hold())
"""


async def test_a_replica_that_dies_loses_its_instances_when_its_lease_expires(
    etcd: EtcdCluster, processes: Processes
) -> None:
    watching = etcd_store(etcd.url)
    other = watching.registry("watching")
    seen = Seen(other.others())
    task = asyncio.create_task(seen.follow())
    script = HOLDER.format(instance=(A.service, A.address, A.port, A.labels))
    holder = processes.start("holder", [sys.executable, "-c", script, etcd.url])
    try:
        await wait_for_async(lambda: seen.latest == {A}, 15, message="A registered")
        processes.kill(holder)
        killed_at = time.monotonic()
        await wait_for_async(
            lambda: seen.latest == frozenset(), LEASE_TTL_S + 5, message="A expired"
        )
        assert time.monotonic() - killed_at >= LEASE_TTL_S - 2 * KEEPALIVE_S
    finally:
        task.cancel()
        await other.close()
        await watching.close()


async def test_the_history_keeps_versions_and_follows_the_current_one(etcd: EtcdCluster) -> None:
    store = etcd_store(etcd.url)
    try:
        first = MeshVersion("aaaa", b"mesh: one\n", "ann", 1.0)
        second = MeshVersion("bbbb", b"mesh: two\n", "bob", 2.0)
        await store.history.put(first)
        await store.history.put(second)
        assert [v.version for v in await store.history.versions()] == ["aaaa", "bbbb"]
        assert await store.history.get("aaaa") == first
        assert await store.history.get("cccc") is None
        current = store.history.current()
        assert await anext(current) == second
        await store.history.put(first)
        assert await anext(current) == first
    finally:
        await store.close()


async def test_the_registry_goes_on_when_one_member_of_three_dies(
    etcd_cluster: EtcdCluster,
) -> None:
    writer_store, reader_store = etcd_store(etcd_cluster.url), etcd_store(etcd_cluster.url)
    writer, reader = writer_store.registry("w"), reader_store.registry("r")
    seen = Seen(reader.others())
    task = asyncio.create_task(seen.follow())
    try:
        writer.register("reviews~127.0.0.5", A)
        await wait_for_async(lambda: seen.latest == {A}, 10, message="A registered")
        etcd_cluster.kill(etcd_cluster.members[0])
        writer.register("ratings~127.0.0.6", B)
        await wait_for_async(lambda: seen.latest == {A, B}, 15, message="B registered")
    finally:
        task.cancel()
        await writer.close()
        await reader.close()
        await writer_store.close()
        await reader_store.close()
