"""Proxyless gRPC clients (gRPC's own xDS client, no sidecar): what they are sent, and how their
stream differs from a sidecar's (named LDS/CDS, no server-side make-before-break)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from meshpilot.bootstrap import sidecar_identity
from meshpilot.cli import main
from meshpilot.grpc_bootstrap import grpc_bootstrap
from meshpilot.model import ir, proxies
from meshpilot.translator.resources import Resource
from meshpilot.translator.translate import Translator
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.node import BadNode, proxy_from_node
from meshpilot.xds.protocol import SyncStatus
from meshpilot.xds.snapshot import check_consistent
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE
from tests.ads_support import V1, V2, Plane, serving
from tests.support.client import AdsClient, sidecar_node
from tests.support.wait import wait_for_async

SPLIT = (ir.Destination("v1", 80), ir.Destination("v2", 20))
GREETER = ir.Service(
    "greeter",
    50051,
    "grpc",
    (ir.Subset("v1", V1), ir.Subset("v2", V2)),
    routes=(ir.Route("canary", ir.RouteMatch(), SPLIT),),
)
MESH = ir.MeshIR(
    "test",
    (
        GREETER,
        ir.Service("h2", 8443, "http2"),
        ir.Service("web", 9080, "http"),
        ir.Service("db", 5432, "tcp"),
        ir.Service("api", 443, "grpc", endpoints=(ir.StaticEndpoint("api.example.com", 443),)),
        ir.Service("scoped", 9080, "http", egress=("greeter",)),
    ),
)
CLIENT = proxies.Proxy("client~127.0.0.9~proxyless", "client", "127.0.0.9", 8080, (), None, True)
SERVERS = [
    proxies.Proxy(f"greeter~{ip}", "greeter", ip, 8080, labels)
    for ip, labels in (("127.0.0.2", V1), ("127.0.0.3", V2))
]
SPLIT_CLUSTERS = ["outbound|50051|v1|greeter", "outbound|50051|v2|greeter"]


MESSAGES: dict[str, type[Message]] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
}


def message(res: Resource) -> Message:
    holder = discovery_pb2.DiscoveryResponse.FromString(res.entry).resources[0]
    return MESSAGES[res.type_url].FromString(holder.value)


def translated(client: proxies.Proxy = CLIENT) -> dict[str, dict[str, Message]]:
    """The client's view (checked to be consistent) as messages, by type and name."""
    translator = Translator()
    shared = translator.translate(MESH, [p.instance for p in SERVERS if p.instance])
    view = translator.view(shared, client)
    check_consistent(view)
    return {t: {n: message(r) for n, r in view[t].resources.items()} for t in view}


def test_a_proxyless_client_gets_an_api_listener_per_service_that_speaks_http2() -> None:
    view = translated()
    # Not http/1 services (gRPC cannot call them), tcp ones, nor external ones (DNS clusters).
    assert sorted(view[LISTENER]) == ["greeter:50051", "h2:8443"]
    built = view[LISTENER]["greeter:50051"]
    assert isinstance(built, listener_pb2.Listener)
    assert not built.HasField("address")
    manager = hcm.HttpConnectionManager()
    assert built.api_listener.api_listener.Unpack(manager)
    assert manager.rds.route_config_name == "greeter:50051"
    assert manager.rds.config_source.HasField("ads")
    assert manager.http_filters[-1].name == "envoy.filters.http.router"


def test_its_route_table_is_the_services_virtual_host_with_the_split() -> None:
    view = translated()
    assert sorted(view[ROUTE]) == ["greeter:50051", "h2:8443"]  # no "outbound" table
    table = view[ROUTE]["greeter:50051"]
    assert isinstance(table, route_pb2.RouteConfiguration)
    (host,) = table.virtual_hosts  # no catch-all: gRPC matches its target's authority
    assert "greeter:50051" in host.domains
    split = host.routes[0].route.weighted_clusters.clusters
    assert [(c.name, c.weight.value) for c in split] == list(
        zip(SPLIT_CLUSTERS, (80, 20), strict=True)
    )


def test_it_has_no_cluster_of_its_own_and_endpoints_are_the_servers_sidecars() -> None:
    view = translated()
    assert not any(name.startswith("inbound") for name in view[CLUSTER])
    cluster = view[CLUSTER]["outbound|50051|v2|greeter"]
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert cluster.type == cluster_pb2.Cluster.EDS
    v2 = view[ENDPOINT]["outbound|50051|v2|greeter"]
    assert isinstance(v2, endpoint_pb2.ClusterLoadAssignment)
    (locality,) = v2.endpoints
    assert locality.load_balancing_weight.value == 1  # gRPC drops a locality without weight
    assert locality.HasField("locality")
    address = locality.lb_endpoints[0].endpoint.address.socket_address
    assert (address.address, address.port_value) == ("127.0.0.3", proxies.INBOUND_PORT)


def test_its_services_egress_scopes_what_it_may_call() -> None:
    scoped = proxies.Proxy("s~127.0.0.8~proxyless", "scoped", "127.0.0.8", 8080, (), None, True)
    view = translated(scoped)
    assert list(view[LISTENER]) == ["greeter:50051"]
    assert not any("|h2" in name for name in view[CLUSTER])


def test_a_proxyless_client_is_no_instance_of_its_service() -> None:
    assert CLIENT.instance is None
    assert SERVERS[0].instance is not None


def node(**metadata: object) -> proxies.Proxy:
    meta = struct_pb2.Struct()
    meta.update({"service": "client", "ip": "127.0.0.9", **metadata})
    return proxy_from_node(base_pb2.Node(id="c", metadata=meta))


def test_the_node_says_whether_it_is_proxyless() -> None:
    assert node(proxyless=True).proxyless
    assert not node().proxyless
    with pytest.raises(BadNode, match="proxyless"):
        node(proxyless="yes")


def test_the_grpc_bootstrap_names_the_control_plane_and_a_proxyless_node() -> None:
    identity = sidecar_identity("client", "v1", (), "127.0.0.9", 8080, "[::1]:18000")
    written = grpc_bootstrap(identity)
    (server,) = written["xds_servers"]
    assert server == {
        "server_uri": "[::1]:18000",
        "channel_creds": [{"type": "insecure"}],
        "server_features": ["xds_v3"],
    }
    metadata = written["node"]["metadata"]
    assert metadata["proxyless"] is True and metadata["labels"] == {"version": "v1"}
    assert written["node"]["id"] == "client~127.0.0.9~proxyless"


def test_the_grpc_bootstrap_lists_every_replica_in_order() -> None:
    replicas = "10.0.0.1:18000,[::1]:18100,cp-3:18000"
    identity = sidecar_identity("client", None, (), "127.0.0.9", 8080, replicas)
    servers = grpc_bootstrap(identity)["xds_servers"]
    assert [s["server_uri"] for s in servers] == ["10.0.0.1:18000", "[::1]:18100", "cp-3:18000"]
    assert all(s["channel_creds"] == [{"type": "insecure"}] for s in servers)


def test_bootstrap_proxyless_prints_json_and_refuses_a_token(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(main, ["bootstrap", "--proxyless", "--service", "client"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["node"]["metadata"]["proxyless"] is True
    token = tmp_path / "token"
    token.touch()
    refused = runner.invoke(
        main, ["bootstrap", "--proxyless", "--service", "c", "--token-file", str(token)]
    )
    assert refused.exit_code == 2 and "--insecure" in refused.output


def names(response: discovery_pb2.DiscoveryResponse, message: type) -> list[str]:
    found = [message.FromString(r.value) for r in response.resources]
    return [getattr(m, "name", None) or m.cluster_name for m in found]


@contextlib.asynccontextmanager
async def proxyless_client() -> AsyncIterator[tuple[SnapshotCache, Plane, AdsClient]]:
    """A server for MESH and the proxyless CLIENT's stream to it."""
    cache = SnapshotCache()
    cache.set_mesh(MESH)
    async with serving(cache) as plane, AdsClient(plane.address, sidecar_node(CLIENT)) as client:
        yield cache, plane, client


async def test_a_grpc_client_is_served_what_it_names_in_the_order_it_asks() -> None:
    """gRPC asks for LDS by its target's name, then the route table, then the clusters the
    routes name, then their endpoints: each must come before the next is asked for."""
    async with proxyless_client() as (cache, plane, client):
        lds = await client.fetch(LISTENER, ["greeter:50051"])
        assert names(lds, listener_pb2.Listener) == ["greeter:50051"]
        # Before any cluster is asked for: a sidecar's routes would wait for them.
        rds = await client.fetch(ROUTE, ["greeter:50051"])
        assert names(rds, route_pb2.RouteConfiguration) == ["greeter:50051"]
        cds = await client.fetch(CLUSTER, SPLIT_CLUSTERS)
        assert sorted(names(cds, cluster_pb2.Cluster)) == SPLIT_CLUSTERS
        eds = await client.fetch(ENDPOINT, SPLIT_CLUSTERS)
        assert sorted(names(eds, endpoint_pb2.ClusterLoadAssignment)) == SPLIT_CLUSTERS
        node_id = CLIENT.node_id
        await wait_for_async(
            lambda: all(
                plane.state(node_id, t) is SyncStatus.SYNCED
                for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)
            )
        )
        assert cache.watches[0].instance is None  # no endpoint of `client`


async def test_a_wildcard_request_after_a_named_one_is_served_everything() -> None:
    async with proxyless_client() as (_, _, client):
        named = await client.fetch(LISTENER, ["h2:8443"])
        assert names(named, listener_pb2.Listener) == ["h2:8443"]
        everything = await client.fetch(LISTENER, ["*"])
        assert sorted(names(everything, listener_pb2.Listener)) == ["greeter:50051", "h2:8443"]
