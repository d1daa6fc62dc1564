"""Slow, stuck and hostile ADS clients cost the sidecars already in the mesh nothing: streams
that have not answered push from a pool of their own, writes and answers have deadlines, and
one peer address has bounded streams (issue 13, item 1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from meshpilot.identity.admission import Refused
from meshpilot.xds import server as ads_server
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.peers import PeerLimits
from meshpilot.xds.types import CLUSTER
from tests.ads_support import Plane, mesh, proxy, round_trip, serving
from tests.support.client import sidecar_node
from tests.support.wait import wait_for_async
from tests.support.zero_window import ZeroWindowClient
from tests.test_ads_sharing import permits

ENDED = "meshpilot_xds_streams_ended_total"
REFUSED = "meshpilot_xds_streams_refused_total"


@pytest.fixture
def one_permit_per_pool(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for pool in ("MAX_STREAMS_PUSHING", "MAX_UNPROVEN_STREAMS_PUSHING"):
        monkeypatch.setattr(ads_server, pool, 1)
    return monkeypatch


@pytest.fixture
async def served() -> AsyncIterator[Plane]:
    """A server counting into the cache's metrics, which the tests read."""
    cache = SnapshotCache()
    cache.set_mesh(mesh())
    async with serving(cache) as running:
        yield running


@pytest.fixture
async def tight(one_permit_per_pool: pytest.MonkeyPatch) -> AsyncIterator[Plane]:
    """One permit per pool, held for a minute without an answer: only the pools keep a proxy
    that answers going while others do not."""
    for hold in ("PERMIT_HOLD_S", "UNPROVEN_PERMIT_HOLD_S"):
        one_permit_per_pool.setattr(ads_server, hold, 60)
    cache = SnapshotCache()
    cache.set_mesh(mesh())
    async with serving(cache) as running:
        yield running


async def test_streams_that_never_answer_do_not_delay_a_proxy_that_does(tight: Plane) -> None:
    async with (
        tight.client(proxy("good", "127.0.0.2")) as good,
        tight.client(proxy("silent", "127.0.0.3")) as silent,
        tight.client(proxy("quiet", "127.0.0.4")) as quiet,
    ):
        good.send(CLUSTER)
        good.ack(await good.receive())
        silent.send(CLUSTER)
        await silent.receive()  # never answered: it keeps the newcomers' permit
        quiet.send(CLUSTER)
        await wait_for_async(lambda: permits(tight) == (1, 1))  # quiet waits for silent's
        tight.cache.set_mesh(mesh(with_v2=False))  # one cluster fewer
        assert (await good.receive(timeout=10)).type_url == CLUSTER  # holds are 60 s


async def test_a_zero_window_stream_gives_up_its_permit_then_is_ended(
    one_permit_per_pool: pytest.MonkeyPatch, served: Plane
) -> None:
    plane = served
    one_permit_per_pool.setattr(ads_server, "UNPROVEN_PERMIT_HOLD_S", 0.3)
    one_permit_per_pool.setattr(ads_server, "WRITE_TIMEOUT_S", 2.0)
    stuck = ZeroWindowClient(plane.address, sidecar_node(proxy("stuck", "127.0.0.2")))
    await stuck.open()
    try:
        await wait_for_async(lambda: plane.watch("stuck~127.0.0.2") is not None)
        async with plane.client(proxy("next", "127.0.0.3")) as following:
            following.send(CLUSTER)  # needs the one permit the stuck write held
            assert (await following.receive(timeout=5)).type_url == CLUSTER
        await wait_for_async(lambda: plane.metric(ENDED, {"reason": "write_timeout"}) == 1)
        await wait_for_async(lambda: plane.watch("stuck~127.0.0.2") is None)
        assert permits(plane) == (0, 0)
    finally:
        await stuck.close()


async def test_an_unread_stream_counts_against_its_peer_until_its_connection_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gRPC keeps an unread response until the connection closes, whatever the handler does:
    the stream counts against its peer until the server closes the connection (its age)."""
    monkeypatch.setattr(ads_server, "WRITE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(ads_server, "UNPROVEN_PERMIT_HOLD_S", 0.1)
    monkeypatch.setattr(ads_server, "MAX_CONNECTION_AGE_S", 2.0)
    monkeypatch.setattr(ads_server, "MAX_CONNECTION_AGE_GRACE_S", 1.0)
    cache = SnapshotCache()
    cache.set_mesh(mesh())
    async with serving(cache, PeerLimits(max_streams=1, rate=0)) as plane:
        stuck = ZeroWindowClient(plane.address, sidecar_node(proxy("stuck", "127.0.0.2")))
        await stuck.open()
        try:
            await wait_for_async(lambda: plane.metric(ENDED, {"reason": "write_timeout"}) == 1)
            async with plane.client(proxy("next", "127.0.0.3")) as refused:
                refused.send(CLUSTER)
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await refused.receive()
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert not await asyncio.wait_for(stuck.ended_by_server(), 10)  # closed, not ended
        finally:
            await stuck.close()
        await wait_for_async(lambda: joins(plane))


async def test_a_proxy_that_never_answers_is_disconnected_and_others_stay(
    monkeypatch: pytest.MonkeyPatch, served: Plane
) -> None:
    plane = served
    monkeypatch.setattr(ads_server, "ANSWER_TIMEOUT_S", 0.5)
    async with (
        plane.client(proxy("silent", "127.0.0.2")) as silent,
        plane.client(proxy("good", "127.0.0.3")) as good,
    ):
        silent.send(CLUSTER)
        await silent.receive()
        good.send(CLUSTER)
        good.ack(await good.receive())
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await silent.receive(timeout=5)
        assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert plane.metric(ENDED, {"reason": "no_answer"}) == 1
        await round_trip(good)  # answered in time: still served


async def test_streams_beyond_the_per_peer_limit_are_refused() -> None:
    cache = SnapshotCache()
    cache.set_mesh(mesh())
    async with serving(cache, PeerLimits(max_streams=1, rate=0)) as plane:
        async with plane.client(proxy("first", "127.0.0.2")) as first:
            first.send(CLUSTER)
            await first.receive()
            async with plane.client(proxy("second", "127.0.0.3")) as second:
                second.send(CLUSTER)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await second.receive()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert plane.metric(REFUSED, {"reason": "peer_streams"}) == 1
        await wait_for_async(lambda: joins(plane))  # the first one's slot was freed


async def joins(plane: Plane) -> bool:
    """Whether a new stream is served (not refused)."""
    async with plane.client(proxy("later", "127.0.0.4")) as later:
        later.send(CLUSTER)
        try:
            return (await later.receive()).type_url == CLUSTER
        except grpc.aio.AioRpcError:
            return False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


PEER = "ipv4:10.1.2.3:4567"


def test_open_streams_per_peer_are_counted_until_they_close() -> None:
    limits = PeerLimits(max_streams=2, rate=0)
    close_one = limits.open(PEER)
    limits.open("ipv4:10.1.2.3:9999")  # same address, another port
    with pytest.raises(Refused, match="already has 2") as refused:
        limits.open(PEER)
    assert refused.value.reason == "peer_streams"
    limits.open("ipv4:10.1.2.4:4567")  # another address has its own count
    close_one()
    limits.open(PEER)


def test_new_streams_per_peer_are_rate_limited_with_a_burst() -> None:
    clock = Clock()
    limits = PeerLimits(max_streams=0, rate=2, clock=clock)
    limits.open(PEER)
    limits.open(PEER)
    with pytest.raises(Refused, match="faster than 2 per second") as refused:
        limits.open(PEER)
    assert refused.value.reason == "peer_rate"
    clock.now += 0.5
    limits.open(PEER)
    with pytest.raises(Refused):
        limits.open(PEER)


def test_peers_seen_once_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("meshpilot.xds.peers.MAX_PEERS_TRACKED", 10)
    clock = Clock()
    limits = PeerLimits(max_streams=4, rate=1, clock=clock)
    for n in range(50):
        limits.open(f"ipv4:10.0.0.{n}:1")()
        clock.now += 10  # every earlier bucket is full again
    assert len(limits._buckets) <= 11
