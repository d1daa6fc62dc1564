"""The etcd store against real etcd: replicas see each other's instances, lose a dead replica's
when its lease expires, and go on through the loss of one member of three."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from harness.etcd import EtcdCluster
from harness.processes import Processes

from meshpilot.identity.shared import open_shared_identity, shared_token_authority
from meshpilot.mesh.load import load_mesh
from meshpilot.model.proxies import Instance
from meshpilot.store import open_store
from meshpilot.store.etcd import KEEPALIVE_S, LEASE_TTL_S, TXN_OPS, EtcdStore
from tests.support.wait import wait_for_async

pytestmark = pytest.mark.slow  # several control planes and etcd members: `make test-slow`

A = Instance("reviews", "127.0.0.5", 15006, (("version", "v1"),))
B = Instance("ratings", "127.0.0.6", 15006, ())


class Replica:
    """One replica's view of the store: its registry, and the latest answer of `others()`,
    read in the background."""

    def __init__(self, store: EtcdStore, name: str) -> None:
        self.store = store
        self.registry = store.registry(name)
        self.latest: frozenset[Instance] | None = None
        self.answers: list[frozenset[Instance]] = []
        self._following = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        async for found in self.registry.others():
            self.latest = found
            self.answers.append(found)

    async def sees(self, wanted: set[Instance], what: str, timeout: float = 15) -> None:
        await wait_for_async(lambda: self.latest == wanted, timeout, message=what)

    async def close(self) -> None:
        self._following.cancel()
        await self.registry.close()
        await self.store.close()


def etcd_store(url: str) -> EtcdStore:
    store = open_store(url)
    assert isinstance(store, EtcdStore)
    return store


@contextlib.asynccontextmanager
async def replicas(url: str, *names: str) -> AsyncIterator[list[Replica]]:
    """A store connection and registry per name, all closed afterwards."""
    started = [Replica(etcd_store(url), name) for name in names]
    try:
        yield started
    finally:
        for replica in started:
            await replica.close()


async def test_replicas_see_each_others_instances_and_not_their_own(etcd: EtcdCluster) -> None:
    async with replicas(etcd.url, "one", "two") as (one, two):
        one.registry.register("reviews~127.0.0.5", A)
        two.registry.register("ratings~127.0.0.6", B)
        await two.sees({A}, "two sees A")
        await one.sees({B}, "one sees B")
        one.registry.deregister("reviews~127.0.0.5")
        await two.sees(set(), "A gone")
        assert one.store.health.connected and two.store.health.connected


async def test_more_instances_than_one_transaction_holds_are_all_registered(
    etcd: EtcdCluster,
) -> None:
    instances = {
        f"reviews~127.0.{i // 200}.{i % 200 + 1}": Instance(
            "reviews", f"127.0.{i // 200}.{i % 200 + 1}", 15006, ()
        )
        for i in range(2 * TXN_OPS + 50)
    }
    async with replicas(etcd.url, "many", "other") as (many, other):
        for node_id, instance in instances.items():
            many.registry.register(node_id, instance)
        await other.sees(set(instances.values()), "all of them")
        for node_id in list(instances)[: TXN_OPS + 10]:
            many.registry.deregister(node_id)
        await other.sees(set(list(instances.values())[TXN_OPS + 10 :]), "the rest")


async def test_a_replica_whose_instances_keep_changing_keeps_its_lease(etcd: EtcdCluster) -> None:
    async with replicas(etcd.url, "busy", "other") as (busy, other):
        joined: set[Instance] = set()
        started = time.monotonic()
        while time.monotonic() - started < LEASE_TTL_S + 2 * KEEPALIVE_S:
            instance = Instance("reviews", f"127.0.1.{len(joined) + 1}", 15006, ())
            busy.registry.register(f"reviews~{instance.address}", instance)
            joined.add(instance)
            await asyncio.sleep(KEEPALIVE_S / 4)  # a change more often than the lease's renewal
        await other.sees(joined, "every instance")
        lost = [old - new for old, new in itertools.pairwise(other.answers) if old - new]
        assert lost == [], f"instances expired meanwhile: {lost[0]}"


HOLDER = """
import asyncio, sys
from meshpilot.identity.shared import open_shared_identity, shared_token_authority
from meshpilot.mesh.load import load_mesh
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
    script = HOLDER.format(instance=(A.service, A.address, A.port, A.labels))
    async with replicas(etcd.url, "watching") as (watching,):
        holder = processes.start("holder", [sys.executable, "-c", script, etcd.url])
        await watching.sees({A}, "A registered")
        processes.kill(holder)
        killed_at = time.monotonic()
        await watching.sees(set(), "A expired", timeout=LEASE_TTL_S + 5)
        assert time.monotonic() - killed_at >= LEASE_TTL_S - 2 * KEEPALIVE_S


async def test_a_replica_that_leaves_keeps_its_instances_until_its_lease_expires(
    etcd: EtcdCluster,
) -> None:
    async with replicas(etcd.url, "leaving", "watching") as (leaving, watching):
        leaving.registry.register("reviews~127.0.0.5", A)
        await watching.sees({A}, "A registered")
        seen_before = len(watching.answers)
        await leaving.registry.leave()
        left_at = time.monotonic()
        leaving.registry.deregister("reviews~127.0.0.5")  # its stream ending as the replica stops
        await watching.sees(set(), "A expired with the lease", timeout=LEASE_TTL_S + 5)
        assert time.monotonic() - left_at >= LEASE_TTL_S - 2 * KEEPALIVE_S
        assert watching.answers[seen_before:] == [frozenset()]  # nothing between


async def test_replicas_opening_the_identity_at_once_share_one_ca_and_token_key(
    etcd: EtcdCluster, tmp_path: Path
) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("mesh: demo\nservices: {reviews: {port: 9080}}\n")
    spec = load_mesh(mesh)
    stores = [etcd_store(etcd.url) for _ in range(3)]
    try:
        one, two = await asyncio.gather(
            *(
                open_shared_identity(spec, tmp_path, tmp_path / n, s.keys)
                for n, s in zip(("one", "two"), stores, strict=False)
            )
        )
        assert one.ca.fingerprint == two.ca.fingerprint
        assert one.ca.chain_pem == two.ca.chain_pem
        assert two.tokens.verify(one.tokens.issue("reviews")).service == "reviews"
        cli = await shared_token_authority(stores[2].keys, tmp_path / "cli")
        assert one.tokens.verify(cli.issue("ratings")).ca_fingerprint == one.ca.fingerprint
    finally:
        for store in stores:
            await store.close()


async def test_the_history_numbers_versions_and_follows_the_current_one(
    etcd: EtcdCluster,
) -> None:
    store, other = etcd_store(etcd.url), etcd_store(etcd.url)
    try:
        first, _ = await store.history.append(b"mesh: one\n", "/m/mesh.yaml", "ann")
        current = other.history.current()
        assert await anext(current) == first
        second, _ = await store.history.append(b"mesh: two\n", "/m/mesh.yaml", "bob")
        assert await anext(current) == second
        back, new = await other.history.rollback(1, "cid")
        assert new and back.number == 3 and back.content == first.content
        assert await anext(current) == back
        assert [v.number for v in await store.history.versions()] == [1, 2, 3]
        assert await store.history.get(2) == second and await store.history.get(9) is None
    finally:
        await store.close()
        await other.close()


async def test_concurrent_appends_from_two_clients_take_distinct_numbers(
    etcd: EtcdCluster,
) -> None:
    stores = [etcd_store(etcd.url) for _ in range(2)]
    try:
        appends = [
            stores[i % 2].history.append(f"mesh: m{i}\n".encode(), "/m", "x") for i in range(10)
        ]
        stored = await asyncio.gather(*appends)
        assert sorted(v.number for v, new in stored if new) == list(range(1, 11))
        assert [v.number for v in await stores[0].history.versions()] == list(range(1, 11))
    finally:
        for store in stores:
            await store.close()


async def test_the_registry_goes_on_when_one_member_of_three_dies(
    etcd_cluster: EtcdCluster,
) -> None:
    async with replicas(etcd_cluster.url, "w", "r") as (writer, reader):
        writer.registry.register("reviews~127.0.0.5", A)
        await reader.sees({A}, "A registered")
        etcd_cluster.kill(etcd_cluster.members[0])
        writer.registry.register("ratings~127.0.0.6", B)
        await reader.sees({A, B}, "B registered")
