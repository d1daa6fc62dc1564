"""Incremental (delta) ADS: a real gRPC server and a test client speaking DeltaAggregatedResources,
each rule of the protocol exercised where a broken implementation would show."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.model import ir
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.protocol import SyncStatus
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.ads_support import REVIEWS_ROUTES, Plane, mesh, proxy, serving
from tests.support.client import DeltaClient, sidecar_node
from tests.support.wait import wait_for_async

V1, V2, ALL = (f"outbound|9080|{s}|reviews" for s in ("v1", "v2", ""))
CLUSTERS = sorted(["inbound|8080||", V1, V2, ALL])
NODE = "a~127.0.0.2"


@pytest.fixture
async def served() -> AsyncIterator[Plane]:
    cache = SnapshotCache()
    cache.set_mesh(mesh())
    async with serving(cache) as running:
        yield running


def delta_client(plane: Plane, name: str = "a") -> DeltaClient:
    return DeltaClient(plane.address, sidecar_node(proxy(name, "127.0.0.2")))


def names(response: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    return sorted(r.name for r in response.resources)


async def wait_for_status(
    plane: Plane, type_url: str, status: SyncStatus = SyncStatus.SYNCED
) -> None:
    await wait_for_async(lambda: plane.state(NODE, type_url) is status)


async def clusters(client: DeltaClient) -> discovery_pb2.DeltaDiscoveryResponse:
    """A wildcard CDS subscription, answered and ACKed."""
    client.request(CLUSTER)
    response = await client.receive_delta()
    client.ack_delta(response)
    return response


async def test_a_wildcard_subscription_gets_every_cluster_with_its_own_version(
    served: Plane,
) -> None:
    async with delta_client(served) as client:
        response = await clusters(client)
        assert response.type_url == CLUSTER and response.nonce
        assert names(response) == CLUSTERS
        assert len(response.system_version_info) == 16
        for res in response.resources:
            assert cluster_pb2.Cluster.FromString(res.resource.value).name == res.name
            assert len(res.version) == 16
        assert len({r.version for r in response.resources}) == len(CLUSTERS)
        await wait_for_status(served, CLUSTER)
        assert [w.protocol for w in served.cache.watches] == ["delta"]


async def test_a_change_sends_only_what_changed_and_names_what_is_gone(served: Plane) -> None:
    async with delta_client(served) as client:
        first = await clusters(client)
        await wait_for_status(served, CLUSTER)
        served.cache.set_mesh(mesh(with_v2=False))
        update = await client.receive_delta()
        assert list(update.removed_resources) == [V2]
        unchanged = {r.name: r.version for r in first.resources}
        assert all(unchanged.get(r.name) != r.version for r in update.resources)
        client.ack_delta(update)
        await wait_for_status(served, CLUSTER)


async def test_named_subscriptions_add_and_drop_names_one_by_one(served: Plane) -> None:
    async with delta_client(served) as client:
        await clusters(client)
        client.request(ENDPOINT, subscribe=[V1])
        one = await client.receive_delta()
        assert names(one) == [V1]
        client.ack_delta(one)
        client.request(ENDPOINT, subscribe=[V2])
        two = await client.receive_delta()
        assert names(two) == [V2]  # not V1 again: the proxy has it
        client.ack_delta(two)
        client.request(ENDPOINT, unsubscribe=[V1])
        await wait_for_status(served, ENDPOINT)
        acked = served.type_state(NODE, ENDPOINT).acked
        assert acked is not None and set(acked.names) == {V2}
        with pytest.raises(TimeoutError):
            await client.receive_delta(timeout=0.3)  # unsubscribing is not answered


async def test_a_nack_is_recorded_and_the_next_change_is_computed_from_what_the_proxy_kept(
    served: Plane,
) -> None:
    async with delta_client(served) as client:
        await clusters(client)
        await wait_for_status(served, CLUSTER)
        served.cache.set_mesh(mesh(with_v2=False))
        rejected = await client.receive_delta()
        client.nack_delta(rejected, "bad cluster")
        state = served.type_state(NODE, CLUSTER)
        await wait_for_status(served, CLUSTER, SyncStatus.NACKED)
        assert state.error == "bad cluster"
        with pytest.raises(TimeoutError):
            await client.receive_delta(timeout=0.3)  # the rejected version is not sent again
        served.cache.set_mesh(mesh(v2_weight=40))  # v2 is back: the proxy never lost it,
        await wait_for_status(served, CLUSTER)  # so it has exactly what it should
        with pytest.raises(TimeoutError):
            await client.receive_delta(timeout=0.3)


async def test_a_reconnect_with_the_same_versions_is_sent_nothing(served: Plane) -> None:
    async with delta_client(served) as client:
        first = await clusters(client)
    versions = {r.name: r.version for r in first.resources}
    async with delta_client(served) as again:
        again.request(CLUSTER, initial=versions)
        with pytest.raises(TimeoutError):
            await again.receive_delta(timeout=0.3)
        await wait_for_status(served, CLUSTER)


async def test_a_reconnect_gets_only_what_differs_from_the_versions_it_has(
    served: Plane,
) -> None:
    async with delta_client(served) as client:
        first = await clusters(client)
    versions = {r.name: r.version for r in first.resources}
    versions[V1] = "0000000000000000"  # stale
    versions["outbound|9080|v9|reviews"] = "0000000000000001"  # gone since
    async with delta_client(served) as again:
        again.request(CLUSTER, initial=versions)
        update = await again.receive_delta()
        assert names(update) == [V1]
        assert list(update.removed_resources) == ["outbound|9080|v9|reviews"]


async def test_listeners_and_routes_wait_until_what_they_use_is_acked(served: Plane) -> None:
    async with delta_client(served) as client:
        client.request(LISTENER)
        client.request(CLUSTER)
        cds = await client.receive_delta()
        assert cds.type_url == CLUSTER
        with pytest.raises(TimeoutError):
            await client.receive_delta(timeout=0.3)  # listeners held: clusters not ACKed
        client.ack_delta(cds)
        lds = await client.receive_delta()
        assert lds.type_url == LISTENER and "outbound" in names(lds)
        client.ack_delta(lds)
        client.request(ROUTE, subscribe=[REVIEWS_ROUTES])
        with pytest.raises(TimeoutError):
            await client.receive_delta(timeout=0.3)  # routes held: their endpoints are not ACKed
        client.request(ENDPOINT, subscribe=[V1, V2, ALL])
        eds = await client.receive_delta()
        assert eds.type_url == ENDPOINT
        client.ack_delta(eds)
        assert (await client.receive_delta()).type_url == ROUTE


async def test_a_stale_nonce_is_no_ack(served: Plane) -> None:
    async with delta_client(served) as client:
        client.request(CLUSTER)
        response = await client.receive_delta()
        client.request(CLUSTER, nonce=response.nonce + "x")
        client.request("type.googleapis.com/unknown")
        with pytest.raises(TimeoutError):
            await client.receive_delta(timeout=0.3)
        assert served.type_state(NODE, CLUSTER).awaiting_reply
        client.ack_delta(response)
        await wait_for_status(served, CLUSTER)


async def test_an_updated_cluster_is_sent_its_unchanged_endpoints_again(served: Plane) -> None:
    """Envoy warms an updated cluster until it gets its endpoints, changed or not."""
    async with delta_client(served) as client:
        await clusters(client)
        client.request(ENDPOINT, subscribe=[V1, ALL])
        client.ack_delta(await client.receive_delta())
        await wait_for_status(served, ENDPOINT)
        (reviews,) = served.cache.mesh.services
        slower = dataclasses.replace(reviews, policy=ir.TrafficPolicy(connect_timeout_ms=2500))
        served.cache.set_mesh(dataclasses.replace(served.cache.mesh, services=(slower,)))
        cds = await client.receive_delta()
        assert cds.type_url == CLUSTER and ALL in names(cds)
        eds = await client.receive_delta()
        assert eds.type_url == ENDPOINT and names(eds) == [ALL]


def test_a_request_between_looking_for_a_push_and_pushing_is_taken_into_account() -> None:
    """The server looks for something to push, waits for a push permit, then pushes; what
    a request changed meanwhile (here: a name unsubscribed) is in the push."""
    from meshpilot.translator.translate import Translator
    from meshpilot.xds.cache import Watch
    from meshpilot.xds.delta.stream import DeltaStream, new_delta_types
    from meshpilot.xds.metrics import XdsMetrics
    from meshpilot.xds.snapshot import Consistency
    from meshpilot.xds.sotw.stream import StreamShared
    from meshpilot.xds.types import PUSH_ORDER

    translator = Translator()
    sidecar = proxy("a", "127.0.0.2")
    types = new_delta_types(PUSH_ORDER)
    watch = Watch(sidecar, types, "delta")
    view = translator.view(translator.translate(mesh(), []), sidecar)
    watch.snapshot = Consistency().snapshot(view)
    stream = DeltaStream(watch, types, XdsMetrics(lambda: 1), StreamShared())
    stream.handle_request(
        discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_subscribe=[V1, ALL])
    )
    assert stream.wants_push()
    stream.handle_request(
        discovery_pb2.DeltaDiscoveryRequest(type_url=ENDPOINT, resource_names_unsubscribe=[ALL])
    )
    (pushed,) = stream.next_responses()
    assert names(discovery_pb2.DeltaDiscoveryResponse.FromString(pushed)) == [V1]
