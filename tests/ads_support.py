"""Helpers for in-process ADS tests: a small mesh, proxies, and a handle on a running server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from meshpilot.model import ir, names, proxies
from meshpilot.xds.cache import SnapshotCache, Watch
from meshpilot.xds.peers import PeerLimits
from meshpilot.xds.protocol import SyncStatus, TypeState
from meshpilot.xds.server import AdsServer
from meshpilot.xds.types import ENDPOINT
from tests.support.client import AdsClient, sidecar_node

V1 = (("version", "v1"),)
V2 = (("version", "v2"),)
REVIEWS_ROUTES = names.outbound_route("reviews")  # the route table of `mesh()`'s one service


def mesh(*, v2_weight: int = 25, with_v2: bool = True) -> ir.MeshIR:
    subsets = [ir.Subset("v1", V1)] + ([ir.Subset("v2", V2)] if with_v2 else [])
    to = (
        (ir.Destination("v1", 100 - v2_weight), ir.Destination("v2", v2_weight))
        if with_v2
        else (ir.Destination("v1", 100),)
    )
    reviews = ir.Service(
        "reviews", 9080, "http", tuple(subsets), routes=(ir.Route("canary", ir.RouteMatch(), to),)
    )
    return ir.MeshIR("test", (reviews,))


def proxy(name: str, ip: str, labels: ir.Labels = V1, service: str = "reviews") -> proxies.Proxy:
    return proxies.Proxy(f"{name}~{ip}", service, ip, 8080, labels)


class Plane:
    def __init__(self, cache: SnapshotCache, address: str) -> None:
        self.cache = cache
        self.address = address

    def client(self, p: proxies.Proxy) -> AdsClient:
        return AdsClient(self.address, sidecar_node(p))

    def watch(self, node_id: str) -> Watch | None:
        return next((w for w in self.cache.watches if w.proxy.node_id == node_id), None)

    def type_state(self, node_id: str, type_url: str) -> TypeState:
        watch = self.watch(node_id)
        assert watch is not None, f"{node_id} is not connected"
        return watch.types[type_url]

    def state(self, node_id: str, type_url: str) -> SyncStatus:
        return self.type_state(node_id, type_url).status

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A metric of the server, when it shares the cache's metrics (see `serving`)."""
        return self.cache.metrics.value(name, labels)


@contextlib.asynccontextmanager
async def serving(cache: SnapshotCache, peers: PeerLimits | None = None) -> AsyncIterator[Plane]:
    """An ADS server for `cache` whose metrics are the cache's (push permits, refused views)."""
    from tests.conftest import free_port  # conftest imports this module

    address = f"127.0.0.1:{free_port()}"
    server = AdsServer(cache, cache.metrics, address, peers=peers)
    await server.start()
    try:
        yield Plane(cache, address)
    finally:
        await server.stop(grace=0)


async def round_trip(client: AdsClient) -> None:
    """Return once the server has handled every request `client` sent before: it reads a
    stream's requests in order, and answers this subscription only after reading it."""
    names = ["outbound|9080|v1|reviews"]
    client.send(ENDPOINT, names)
    assert (await client.receive()).type_url == ENDPOINT
