"""MeshIR + live instances -> serialized resources, and the view each proxy receives.

The Translator keeps the output of the previous change keyed by input value, so an edit to one
service re-translates and re-serializes only that service; everything else is reused as bytes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envoy.config.route.v3 import route_pb2

from meshpilot.translator import ir, names
from meshpilot.translator.envoy import cluster, endpoint, listener, route
from meshpilot.translator.envoy.http_connection_manager import HttpConnectionManagerBuilder
from meshpilot.translator.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    Resource,
    ResourceSet,
    resource,
    resource_from_bytes,
)

View = Mapping[str, ResourceSet]


@dataclass(frozen=True)
class ServiceOutput:
    """What one service contributes to every proxy: its clusters and its virtual host."""

    clusters: tuple[Resource, ...]
    virtual_host: bytes
    route_targets: tuple[str, ...]


@dataclass(frozen=True)
class MeshResources:
    """The part of the configuration that all proxies share after one change."""

    clusters: ResourceSet
    endpoints: ResourceSet
    outbound_routes: Resource


def _cluster_namer(service: ir.Service) -> route.ClusterNamer:
    return lambda subset: names.outbound_cluster(service.name, service.port, subset)


def _service_cluster_names(service: ir.Service) -> list[str]:
    namer = _cluster_namer(service)
    return [namer(None), *(namer(s.name) for s in service.subsets)]


def translate_service(service: ir.Service) -> ServiceOutput:
    cluster_names = _service_cluster_names(service)
    clusters = tuple(
        resource(CLUSTER, name, cluster.eds_cluster(name), refs=[name]) for name in cluster_names
    )
    namer = _cluster_namer(service)
    targets = {namer(d.subset) for r in service.routes for d in r.to if d.weight > 0}
    vhost = route.virtual_host(service, namer).SerializeToString(deterministic=True)
    return ServiceOutput(clusters, vhost, tuple(sorted(targets)))


def _has_labels(labels: ir.Labels, wanted: ir.Labels) -> bool:
    return set(wanted) <= set(labels)


def translate_endpoints(
    service: ir.Service, instances: tuple[ir.Instance, ...]
) -> tuple[Resource, ...]:
    """One assignment per cluster of the service: static endpoints plus connected instances."""
    members = [(e.address, e.port, e.labels) for e in service.endpoints]
    members += [(i.address, i.port, i.labels) for i in instances]
    namer = _cluster_namer(service)
    selectors: list[tuple[str, ir.Labels]] = [(namer(None), ())]
    selectors += [(namer(s.name), s.labels) for s in service.subsets]
    return tuple(
        resource(
            ENDPOINT,
            name,
            endpoint.cluster_load_assignment(
                name, [(a, p) for a, p, labels in members if _has_labels(labels, wanted)]
            ),
        )
        for name, wanted in selectors
    )


def local_resources(proxy: ir.Proxy) -> tuple[Resource, ...]:
    """The proxy's own listeners and the cluster that reaches its app."""
    app = names.inbound_cluster(proxy.app_port)
    inbound_routes = route_pb2.RouteConfiguration(
        name=names.INBOUND_ROUTE,
        virtual_hosts=[route.forward_all_virtual_host(names.INBOUND_ROUTE, app)],
    )
    inbound = HttpConnectionManagerBuilder("inbound").with_route_config(inbound_routes).build()
    outbound = HttpConnectionManagerBuilder("outbound").with_rds(names.OUTBOUND_ROUTE).build()
    return (
        resource(CLUSTER, app, cluster.static_cluster(app, proxy.ip, proxy.app_port)),
        resource(
            LISTENER,
            names.INBOUND_LISTENER,
            listener.http_listener(names.INBOUND_LISTENER, proxy.ip, ir.INBOUND_PORT, inbound),
            refs=[app],
        ),
        resource(
            LISTENER,
            names.OUTBOUND_LISTENER,
            listener.http_listener(names.OUTBOUND_LISTENER, proxy.ip, ir.OUTBOUND_PORT, outbound),
            refs=[names.OUTBOUND_ROUTE],
        ),
    )


class Translator:
    """Translates whole meshes, reusing the previous change's output for unchanged inputs."""

    def __init__(self) -> None:
        self._services: dict[ir.Service, ServiceOutput] = {}
        self._endpoints: dict[tuple[ir.Service, tuple[ir.Instance, ...]], tuple[Resource, ...]] = {}
        self._local: dict[ir.Proxy, tuple[Resource, ...]] = {}
        self._unknown_host = route.unknown_host_virtual_host().SerializeToString(
            deterministic=True
        )

    def translate(self, mesh: ir.MeshIR, instances: Iterable[ir.Instance]) -> MeshResources:
        by_service: dict[str, list[ir.Instance]] = defaultdict(list)
        for instance in instances:
            by_service[instance.service].append(instance)
        services = {s: self._services.get(s) or translate_service(s) for s in mesh.services}
        self._services = services  # type: ignore[assignment]
        endpoints = {
            key: self._endpoints.get(key) or translate_endpoints(*key)
            for key in ((s, tuple(sorted(by_service[s.name], key=_instance_key))) for s in mesh.services)
        }
        self._endpoints = endpoints
        outputs = [services[s] for s in mesh.services]
        table = route.route_configuration_bytes(
            names.OUTBOUND_ROUTE, [o.virtual_host for o in outputs] + [self._unknown_host]
        )
        return MeshResources(
            clusters=ResourceSet.of(CLUSTER, (c for o in outputs for c in o.clusters)),
            endpoints=ResourceSet.of(ENDPOINT, (e for es in endpoints.values() for e in es)),
            outbound_routes=resource_from_bytes(
                ROUTE, names.OUTBOUND_ROUTE, table, refs=(t for o in outputs for t in o.route_targets)
            ),
        )

    def view(self, shared: MeshResources, proxy: ir.Proxy) -> dict[str, ResourceSet]:
        """Everything one proxy should have, per type URL."""
        local = self._local.get(proxy) or local_resources(proxy)
        self._local[proxy] = local
        app_cluster, *listeners = local
        return {
            CLUSTER: ResourceSet.of(CLUSTER, [*shared.clusters.resources.values(), app_cluster]),
            ENDPOINT: shared.endpoints,
            LISTENER: ResourceSet.of(LISTENER, listeners),
            ROUTE: ResourceSet.of(ROUTE, [shared.outbound_routes]),
        }

    def forget(self, proxy: ir.Proxy) -> None:
        self._local.pop(proxy, None)


def _instance_key(instance: ir.Instance) -> tuple[str, int]:
    return (instance.address, instance.port)
