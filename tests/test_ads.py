"""In-process ADS feature tests: a real gRPC server and a test client speaking the protocol."""

from __future__ import annotations

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.xds.protocol import SyncStatus
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.ads_support import REVIEWS_ROUTES, V2, Plane, mesh, proxy, round_trip
from tests.support.client import AdsClient


def cluster_names(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    return [cluster_pb2.Cluster.FromString(r.value).name for r in response.resources]


async def sync_clusters_and_endpoints(client: AdsClient) -> None:
    """Bring a client through CDS and EDS, ACKing both, as Envoy does at start-up."""
    client.send(CLUSTER)
    cds = await client.receive()
    names = [n for n in cluster_names(cds) if n.startswith("outbound")]
    client.ack(cds)
    client.send(ENDPOINT, names)
    eds = await client.receive()
    assert eds.type_url == ENDPOINT
    client.ack(eds, names)


async def test_first_response_carries_every_cluster_with_a_content_version(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        response = await client.receive()
    assert response.type_url == CLUSTER
    assert sorted(cluster_names(response)) == [
        "inbound|8080||",
        "outbound|9080|v1|reviews",
        "outbound|9080|v2|reviews",
        "outbound|9080||reviews",
    ]
    assert len(response.version_info) == 16 and response.nonce


async def test_an_ack_is_not_answered_with_the_same_version_again(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        cds = await client.receive()
        client.ack(cds)
        client.send(ENDPOINT, ["outbound|9080||reviews"])
        # Had the ACK triggered a resend, that CDS response would arrive before this one.
        assert (await client.receive()).type_url == ENDPOINT
        assert plane.state("a~127.0.0.2", CLUSTER) is SyncStatus.SYNCED


async def test_a_nack_is_recorded_and_the_rejected_version_is_not_resent(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        cds = await client.receive()
        client.nack(cds, "cluster rejected: bad config")
        client.send(ENDPOINT, ["outbound|9080||reviews"])
        assert (await client.receive()).type_url == ENDPOINT
        watch = plane.cache.watches[0]
        assert watch.types[CLUSTER].status is SyncStatus.NACKED
        assert watch.types[CLUSTER].error == "cluster rejected: bad config"
        assert watch.types[CLUSTER].nacked_version == cds.version_info
        plane.cache.set_mesh(mesh(v2_weight=50, with_v2=False))
        fixed = await client.receive()
    assert fixed.type_url == CLUSTER and fixed.version_info != cds.version_info


async def test_endpoints_are_sent_only_for_the_names_asked_for(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(ENDPOINT, ["outbound|9080|v1|reviews"])
        response = await client.receive()
    assignments = [
        endpoint_pb2.ClusterLoadAssignment.FromString(r.value) for r in response.resources
    ]
    assert [a.cluster_name for a in assignments] == ["outbound|9080|v1|reviews"]
    addresses = [
        e.endpoint.address.socket_address for e in assignments[0].endpoints[0].lb_endpoints
    ]
    assert [(a.address, a.port_value) for a in addresses] == [("127.0.0.2", 15006)]


async def test_routes_wait_until_their_clusters_and_endpoints_are_acked(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        client.send(LISTENER)
        client.send(ROUTE, [REVIEWS_ROUTES])
        cds = await client.receive()
        assert cds.type_url == CLUSTER  # nothing else may go before the clusters are ACKed
        outbound = [n for n in cluster_names(cds) if n.startswith("outbound")]
        client.ack(cds)
        client.send(ENDPOINT, outbound)
        first, second = await client.receive(), await client.receive()
        assert {first.type_url, second.type_url} == {LISTENER, ENDPOINT}
        eds = first if first.type_url == ENDPOINT else second
        client.ack(eds, outbound)
        assert (await client.receive()).type_url == ROUTE


async def test_a_removed_cluster_stays_until_routes_no_longer_use_it(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        await sync_clusters_and_endpoints(client)
        client.send(ROUTE, [REVIEWS_ROUTES])
        rds = await client.receive()
        client.ack(rds, [REVIEWS_ROUTES])
        plane.cache.set_mesh(mesh(with_v2=False))
        new_rds = await client.receive()  # the routes go first: the clusters still hold v2
        assert new_rds.type_url == ROUTE
        table = route_pb2.RouteConfiguration.FromString(new_rds.resources[0].value)
        assert table.virtual_hosts[0].routes[0].route.cluster == "outbound|9080|v1|reviews"
        client.ack(new_rds, [REVIEWS_ROUTES])
        cds = await client.receive()
    assert cds.type_url == CLUSTER and "outbound|9080|v2|reviews" not in cluster_names(cds)


async def test_a_stale_nonce_is_ignored(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        first = await client.receive()
        plane.cache.set_mesh(mesh(with_v2=False))
        client.send(CLUSTER, version="", nonce="999", error="garbage")
        await round_trip(client)  # the request above was handled, and changed nothing:
        assert plane.state("a~127.0.0.2", CLUSTER) is SyncStatus.STALE  # not NACKED
        client.ack(first)
        second = await client.receive()
    assert second.version_info != first.version_info


async def test_a_reconnecting_proxy_with_current_versions_gets_nothing_resent(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        cds = await client.receive()
        client.ack(cds)
    async with plane.client(proxy("a", "127.0.0.2")) as again:
        again.send(CLUSTER, version=cds.version_info)
        again.send(ENDPOINT, ["outbound|9080||reviews"])
        assert (await again.receive()).type_url == ENDPOINT
        assert plane.state("a~127.0.0.2", CLUSTER) is SyncStatus.SYNCED


async def test_a_connected_sidecar_is_an_endpoint_until_its_stream_ends(plane: Plane) -> None:
    names = ["outbound|9080|v2|reviews"]
    async with plane.client(proxy("watcher", "127.0.0.2")) as watcher:
        empty = await watcher.fetch(ENDPOINT, names)
        assert not endpoint_pb2.ClusterLoadAssignment.FromString(empty.resources[0].value).endpoints
        async with plane.client(proxy("member", "127.0.0.3", labels=V2)) as member:
            member.send(CLUSTER)
            joined = await watcher.receive()
            watcher.ack(joined, names)
            assignment = endpoint_pb2.ClusterLoadAssignment.FromString(joined.resources[0].value)
            assert (
                assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address
                == "127.0.0.3"
            )
        left = await watcher.receive()
    assert not endpoint_pb2.ClusterLoadAssignment.FromString(left.resources[0].value).endpoints


async def test_a_node_without_metadata_is_refused_and_others_keep_working(plane: Plane) -> None:
    from envoy.config.core.v3 import base_pb2

    async with AdsClient(plane.address, base_pb2.Node(id="stranger")) as stranger:
        stranger.send(CLUSTER)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stranger.receive()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send(CLUSTER)
        assert (await client.receive()).type_url == CLUSTER


async def test_an_unknown_type_is_ignored(plane: Plane) -> None:
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        client.send("type.googleapis.com/no.such.Type")
        client.send(CLUSTER)
        assert (await client.receive()).type_url == CLUSTER


async def test_after_a_restart_a_reconnecting_proxy_keeps_its_endpoints_while_others_return(
    plane: Plane,
) -> None:
    names = ["outbound|9080|v2|reviews"]
    async with plane.client(proxy("member", "127.0.0.3", labels=V2)) as member:
        before = await member.fetch(ENDPOINT, names)
    plane.cache.hold_reconnects(0.3)  # as if the control plane had just restarted
    async with plane.client(proxy("watcher", "127.0.0.2")) as watcher:
        watcher.send(ENDPOINT, names, version=before.version_info)
        with pytest.raises(TimeoutError):
            await watcher.receive(timeout=0.15)  # held: it claims what it had before the restart
        after = await watcher.receive(timeout=2)  # the grace period ended without the member
    assert after.version_info != before.version_info


async def test_a_re_request_for_endpoints_is_answered_again(plane: Plane) -> None:
    """Envoy warming a replaced cluster asks again for its endpoints with the last nonce."""
    names = ["outbound|9080|v1|reviews"]
    async with plane.client(proxy("a", "127.0.0.2")) as client:
        first = await client.fetch(ENDPOINT, names)
        client.ack(first, names)  # the same nonce again, nothing in flight: a re-request
        again = await client.receive()
    assert again.version_info == first.version_info and again.nonce != first.nonce


async def test_in_a_big_fleet_a_joining_proxy_is_served_at_once_and_its_endpoint_later(
    plane: Plane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From SERVE_AT_ONCE_FROM proxies on, a joining proxy does not wait for the membership
    debounce (seconds in a big fleet): it gets the last translation, then its own endpoint."""
    from meshpilot.xds import cache as cache_module

    v1 = ["outbound|9080|v1|reviews"]
    async with plane.client(proxy("a", "127.0.0.2")) as first:
        assert hosts(await first.fetch(ENDPOINT, v1)) == [("127.0.0.2", 15006)]
        monkeypatch.setattr(cache_module, "SERVE_AT_ONCE_FROM", 1)
        monkeypatch.setattr(cache_module, "MEMBERSHIP_MAX_WAIT_S", 60.0)
        debounce = plane.cache._membership
        monkeypatch.setattr(debounce, "quiet", 60.0)  # the next change waits for the test
        async with plane.client(proxy("late", "127.0.0.7")) as late:
            served = await late.fetch(ENDPOINT, v1)
            assert hosts(served) == [("127.0.0.2", 15006)]  # before the debounce ended
            debounce.quiet = 0.0
            debounce.schedule()  # it ends: the late proxy's own endpoint comes
            updated = await late.receive()
    assert sorted(hosts(updated)) == [("127.0.0.2", 15006), ("127.0.0.7", 15006)]


def hosts(response: discovery_pb2.DiscoveryResponse) -> list[tuple[str, int]]:
    (assignment,) = [
        endpoint_pb2.ClusterLoadAssignment.FromString(r.value) for r in response.resources
    ]
    return [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for locality in assignment.endpoints
        for e in locality.lb_endpoints
    ]
