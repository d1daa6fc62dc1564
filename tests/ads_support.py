"""Helpers for in-process ADS tests: a small mesh, proxies, and a handle on a running server."""

from __future__ import annotations

from meshpilot.model import ir, proxies
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.protocol import SyncStatus
from tests.support.client import AdsClient, sidecar_node

V1 = (("version", "v1"),)
V2 = (("version", "v2"),)


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

    def state(self, node_id: str, type_url: str) -> SyncStatus:
        watch = next(w for w in self.cache.watches if w.proxy.node_id == node_id)
        return watch.types[type_url].status
