"""The store's URL and its in-memory implementation (the etcd one: e2e/test_store_etcd.py)."""

from __future__ import annotations

import asyncio

import pytest

from meshpilot.errors import MeshpilotError
from meshpilot.model.locality import Locality
from meshpilot.model.proxies import Instance
from meshpilot.store import MemoryStore, open_store, parse_store_url
from meshpilot.store.etcd import decode_instance, encode_instance
from tests.support.wait import wait_for_async

A = Instance("reviews", "127.0.0.5", 15006, (("version", "v1"),))
B = Instance("ratings", "127.0.0.6", 15006, ())


def test_a_store_url_lists_every_member_in_order() -> None:
    assert parse_store_url("etcd://127.0.0.1:2379,etcd-2:2380,[::1]:2379") == [
        ("127.0.0.1", 2379),
        ("etcd-2", 2380),
        ("::1", 2379),
    ]


@pytest.mark.parametrize(
    "url", ["127.0.0.1:2379", "http://127.0.0.1:2379", "etcd://", "etcd://h", "etcd://h:1,"]
)
def test_a_bad_store_url_is_one_line_naming_it(url: str) -> None:
    with pytest.raises(MeshpilotError) as err:
        parse_store_url(url)
    message = str(err.value)
    assert "\n" not in message and "--store" in message and "etcd://" in message


@pytest.mark.parametrize(
    "instance",
    [
        A,
        B,
        Instance("reviews", "10.0.0.7", 15006, (("version", "v2"),), Locality("eu", "a", "x")),
        Instance("reviews", "10.0.0.8", 15006, (), Locality("eu", "", "x")),
    ],
)
def test_the_registry_stores_every_field_of_an_instance(instance: Instance) -> None:
    assert decode_instance(encode_instance(instance)) == instance


def test_no_store_url_is_the_memory_store() -> None:
    assert isinstance(open_store(None), MemoryStore)


async def test_replicas_on_one_memory_store_see_each_others_instances() -> None:
    store = MemoryStore()
    one, two = store.registry("one"), store.registry("two")
    seen: list[frozenset[Instance]] = []

    async def follow() -> None:
        async for found in two.others():
            seen.append(found)

    task = asyncio.create_task(follow())
    try:
        await wait_for_async(lambda: seen == [frozenset()], message="first answer")
        one.register("reviews~127.0.0.5", A)
        two.register("ratings~127.0.0.6", B)  # its own: not among the others
        await wait_for_async(lambda: seen[-1] == {A}, message="A")
        await one.close()
        await wait_for_async(lambda: seen[-1] == frozenset(), message="A gone with one")
        assert {A} in seen and all(B not in found for found in seen)
    finally:
        task.cancel()
