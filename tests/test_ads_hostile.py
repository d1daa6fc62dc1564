"""Misbehaving ADS clients never kill the server or disturb other streams."""

from __future__ import annotations

import pytest

from meshpilot.xds.protocol import SyncStatus
from meshpilot.xds.types import CLUSTER
from tests.ads_support import Plane, mesh, proxy, round_trip
from tests.support.wait import wait_for_async
from tests.test_ads import cluster_names


async def test_a_client_that_never_acks_gets_nothing_more_and_blocks_no_one(plane: Plane) -> None:
    async with (
        plane.client(proxy("silent", "127.0.0.2")) as silent,
        plane.client(proxy("good", "127.0.0.3")) as good,
    ):
        silent.send(CLUSTER)
        first = await silent.receive()
        good.send(CLUSTER)
        good.ack(await good.receive())
        plane.cache.set_mesh(mesh(v2_weight=50))
        plane.cache.set_mesh(mesh(with_v2=False))
        update = await good.receive()
        assert update.type_url == CLUSTER
        with pytest.raises(TimeoutError):
            await silent.receive(timeout=0.2)  # one response in flight per type, merged after
        silent.ack(first)
        merged = await silent.receive()
    latest = {n for n in cluster_names(update) if n.startswith("outbound")}
    assert {n for n in cluster_names(merged) if n.startswith("outbound")} == latest
    assert "outbound|9080|v2|reviews" not in latest  # the last change, not each one in turn


async def test_a_client_that_disconnects_mid_push_is_forgotten(plane: Plane) -> None:
    gone = plane.client(proxy("gone", "127.0.0.4"))
    await gone.__aenter__()
    gone.send(CLUSTER)
    await gone.close()
    await wait_for_async(lambda: not plane.cache.watches)
    async with plane.client(proxy("next", "127.0.0.5")) as client:
        client.send(CLUSTER)
        assert (await client.receive()).type_url == CLUSTER


async def test_a_nack_with_a_garbage_nonce_changes_nothing(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        cds = await client.receive()
        client.ack(cds)
        await wait_for_async(lambda: plane.state("a~127.0.0.2", CLUSTER) is SyncStatus.SYNCED)
        client.send(CLUSTER, version=cds.version_info, nonce="\x00garbage", error="boom")
        client.send(CLUSTER, version=cds.version_info, nonce=cds.nonce)
        await round_trip(client)  # both requests above were handled
        assert plane.state("a~127.0.0.2", CLUSTER) is SyncStatus.SYNCED
        assert plane.type_state("a~127.0.0.2", CLUSTER).error is None
