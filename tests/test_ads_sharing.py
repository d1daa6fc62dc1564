"""What ADS streams share: name lists, responses, answers about shared sets, push permits."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.translator.resources import Part, ResourceSet, resource_from_bytes
from meshpilot.xds import server as ads_server
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.sotw.responses import Responses
from meshpilot.xds.sotw.state import SotwTypeState
from meshpilot.xds.sotw.subscriptions import Subscriptions
from meshpilot.xds.types import CLUSTER, ENDPOINT, ROUTE
from tests.ads_support import REVIEWS_ROUTES, Plane, mesh, proxy, serving
from tests.support.wait import wait_for_async

NAMES = ["outbound|9080|v1|reviews", "outbound|9080||reviews"]


def request(names: list[str], nonce: str = "") -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(
        type_url=ENDPOINT, resource_names=names, response_nonce=nonce, version_info=nonce
    )


def test_streams_asking_for_the_same_names_share_one_set_while_one_uses_it() -> None:
    subscriptions = Subscriptions()
    first, second = SotwTypeState(), SotwTypeState()
    subscriptions.subscribe(first, request(NAMES))
    subscriptions.subscribe(second, request(NAMES, nonce="7"))  # an ACK: other fields differ
    assert first.names == frozenset(NAMES)
    assert second.names is first.names and second.names_key is first.names_key
    subscriptions.subscribe(first, request(NAMES[:1]))
    assert first.names == frozenset(NAMES[:1]) and len(subscriptions) == 2
    subscriptions.release(second)
    subscriptions.release(first)
    assert len(subscriptions) == 0


def test_a_shared_set_gets_one_response_and_a_stream_never_the_same_nonce_twice() -> None:
    made = [resource_from_bytes(ENDPOINT, n, n.encode()) for n in NAMES]
    endpoints = ResourceSet.of(ENDPOINT, made)
    responses = Responses()
    nonce, response = responses.response(endpoints, "")
    assert responses.response(endpoints, "other") == (nonce, response)
    again, resent = responses.response(endpoints, nonce)  # a re-request on the same stream
    assert again != nonce and resent != response
    clusters = ResourceSet.of(CLUSTER, [resource_from_bytes(CLUSTER, "a", b"a")])
    assert responses.response(clusters, "")[0] != responses.response(clusters, "")[0]


def test_a_proxy_set_refers_to_the_shared_bytes_instead_of_copying_them() -> None:
    shared = ResourceSet.of(CLUSTER, [resource_from_bytes(CLUSTER, n, n.encode()) for n in "ab"])
    own = Part([resource_from_bytes(CLUSTER, "c", b"c")])
    mine = shared.plus(own)
    assert mine.chunks()[0] is shared.entries
    assert mine.split() == (shared, own)
    assert list(mine.resources) == ["a", "b", "c"] and "c" in mine and "z" not in mine


async def test_two_proxies_with_the_same_endpoints_get_the_same_response(plane: Plane) -> None:
    async with (
        plane.client(proxy("a", "127.0.0.2")) as first,
        plane.client(proxy("b", "127.0.0.3")) as second,
    ):
        first.send(ENDPOINT, NAMES)
        second.send(ENDPOINT, NAMES)
        one, other = await first.receive(), await second.receive()
    assert one.nonce == other.nonce and one == other


@pytest.fixture
async def one_permit(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Plane]:
    """A server on which one stream at a time may have responses in flight (per pool: these
    streams are all new, so they share the unproven one)."""
    for pool in ("MAX_STREAMS_PUSHING", "MAX_UNPROVEN_STREAMS_PUSHING"):
        monkeypatch.setattr(ads_server, pool, 1)
    for hold in ("PERMIT_HOLD_S", "UNPROVEN_PERMIT_HOLD_S"):
        monkeypatch.setattr(ads_server, hold, 0.5)
    cache = SnapshotCache()
    cache.set_mesh(mesh())
    async with serving(cache) as running:
        yield running


def permits(plane: Plane) -> tuple[float, float]:
    """(streams holding a push permit, streams waiting for one), as the server counts them."""
    return (
        plane.metric("meshpilot_xds_streams_pushing"),
        plane.metric("meshpilot_xds_streams_waiting_to_push"),
    )


def streams_in_flight(plane: Plane) -> int:
    return sum(any(s.awaiting_reply for s in w.types.values()) for w in plane.cache.watches)


async def test_a_proxy_that_never_answers_delays_the_others_only_for_the_hold_time(
    one_permit: Plane,
) -> None:
    async with (
        one_permit.client(proxy("silent", "127.0.0.2")) as silent,
        one_permit.client(proxy("other", "127.0.0.3")) as other,
    ):
        silent.send(CLUSTER)
        await silent.receive()  # and never ACKed: its stream holds the one permit
        other.send(CLUSTER)
        await wait_for_async(lambda: permits(one_permit) == (1, 1))  # so the other waits for it
        assert streams_in_flight(one_permit) == 1
        assert (await other.receive(timeout=5)).type_url == CLUSTER
        # Released by the hold time, not by an answer:
        assert one_permit.type_state("silent~127.0.0.2", CLUSTER).awaiting_reply


async def test_a_stream_with_everything_held_back_keeps_no_permit(
    one_permit: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    for hold in ("PERMIT_HOLD_S", "UNPROVEN_PERMIT_HOLD_S"):
        monkeypatch.setattr(ads_server, hold, 100)
    async with (
        one_permit.client(proxy("routes-only", "127.0.0.2")) as held,
        one_permit.client(proxy("other", "127.0.0.3")) as other,
        one_permit.client(proxy("third", "127.0.0.4")) as third,
    ):
        other.send("type.googleapis.com/unknown")  # connected, wanting nothing yet
        third.send("type.googleapis.com/unknown")
        held.send(ROUTE, [REVIEWS_ROUTES])  # held back: its clusters were never ACKed

        def routes_held_back() -> bool:
            """Everyone is connected and has a snapshot (no wakeup comes after this), and the
            routes-only stream has looked at its routes."""
            watches = one_permit.cache.watches
            if len(watches) < 3 or not all(w.snapshot for w in watches):
                return False
            return bool(one_permit.type_state("routes-only~127.0.0.2", ROUTE).desired_version)

        await wait_for_async(routes_held_back)
        other.send(CLUSTER)
        assert (await other.receive(timeout=5)).type_url == CLUSTER  # the permit was free
        third.send(CLUSTER)
        await wait_for_async(lambda: permits(one_permit) == (1, 1))  # one permit: other's
        assert streams_in_flight(one_permit) == 1
        assert not one_permit.type_state("routes-only~127.0.0.2", ROUTE).awaiting_reply
