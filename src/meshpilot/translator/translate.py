"""MeshIR + live instances -> serialized resources, and the view each proxy receives.

The Translator keeps the output of the previous change keyed by input value, so an edit to one
service re-translates and re-serializes only that service; everything else is reused as bytes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from meshpilot.errors import InconsistentSnapshot
from meshpilot.translator import ir, names
from meshpilot.translator.envoy import cluster, endpoint, http_filters, listener, route
from meshpilot.translator.envoy.http_connection_manager import HttpConnectionManagerBuilder
from meshpilot.translator.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    ROUTE,
    LazyUnion,
    Part,
    ResourceSet,
    resource,
    resource_from_bytes,
)

View = Mapping[str, ResourceSet]


@dataclass(frozen=True)
class ServiceOutput:
    """What one service contributes to every proxy: its clusters and its virtual host."""

    clusters: Part
    virtual_host_entry: bytes
    route_targets: frozenset[str]


@dataclass(frozen=True)
class MeshResources:
    """The part of the configuration that all proxies share after one change."""

    clusters: ResourceSet
    endpoints: ResourceSet
    routes: ResourceSet


def _cluster_namer(service: ir.Service) -> route.ClusterNamer:
    return lambda subset: names.outbound_cluster(service.name, service.port, subset)


def _service_cluster_names(service: ir.Service) -> list[str]:
    namer = _cluster_namer(service)
    return [namer(None), *(namer(s.name) for s in service.subsets)]


def translate_service(service: ir.Service) -> ServiceOutput:
    """The service's clusters (one per subset, each named after its endpoints) and routes."""
    cluster_names = _service_cluster_names(service)
    namer = _cluster_namer(service)
    targets = {namer(d.subset) for r in service.routes for d in r.to if d.weight > 0}
    missing = targets - set(cluster_names)
    if missing:
        raise InconsistentSnapshot(f"service {service.name}: routes to unknown {sorted(missing)}")
    clusters = Part(
        resource_from_bytes(CLUSTER, name, cluster.eds_cluster_bytes(name), refs=[name])
        for name in cluster_names
    )
    vhost = route.virtual_host(service, namer).SerializeToString(deterministic=True)
    return ServiceOutput(clusters, route.virtual_host_entry(vhost), frozenset(targets))


def translate_endpoints(service: ir.Service, instances: tuple[ir.Instance, ...]) -> Part:
    """One assignment per cluster of the service: static endpoints plus connected instances."""
    members = [(e.address, e.port, frozenset(e.labels)) for e in service.endpoints]
    members += [(i.address, i.port, frozenset(i.labels)) for i in instances]
    namer = _cluster_namer(service)
    everyone = [(address, port) for address, port, _ in members]
    assignments = [endpoint.cluster_load_assignment(namer(None), everyone)]
    for subset in service.subsets:
        wanted = frozenset(subset.labels)
        chosen = [(address, port) for address, port, labels in members if wanted <= labels]
        assignments.append(endpoint.cluster_load_assignment(namer(subset.name), chosen))
    return Part(resource(ENDPOINT, a.cluster_name, a) for a in assignments)


@dataclass(frozen=True)
class LocalResources:
    """A proxy's own resources: the cluster that reaches its app, and its two listeners."""

    app_cluster: Part
    listeners: ResourceSet


def local_resources(proxy: ir.Proxy) -> LocalResources:
    app = names.inbound_cluster(proxy.app_port)
    inbound_routes = route_pb2.RouteConfiguration(
        name=names.INBOUND_ROUTE,
        virtual_hosts=[route.forward_all_virtual_host(names.INBOUND_ROUTE, app)],
    )
    inbound = HttpConnectionManagerBuilder("inbound").with_route_config(inbound_routes).build()
    outbound = (
        HttpConnectionManagerBuilder("outbound")
        .with_rds(names.OUTBOUND_ROUTE)
        .with_filter(http_filters.FAULT, fault_pb2.HTTPFault())
        .build()
    )
    listeners = [
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
    ]
    app_cluster = resource(CLUSTER, app, cluster.static_cluster(app, proxy.ip, proxy.app_port))
    return LocalResources(Part([app_cluster]), ResourceSet.of(LISTENER, listeners))


class Translator:
    """Translates whole meshes, reusing the previous change's output for unchanged inputs.

    Consistency is checked where resources are made: a service's routes against its clusters when
    the service is translated, a proxy's listeners against its view when the view is assembled.
    """

    def __init__(self) -> None:
        self._services: dict[ir.Service, _ServiceEntry] = {}
        self._local: dict[ir.Proxy, LocalResources] = {}
        self._unknown_host = route.virtual_host_entry(
            route.unknown_host_virtual_host().SerializeToString(deterministic=True)
        )

    def translate(self, mesh: ir.MeshIR, instances: Iterable[ir.Instance]) -> MeshResources:
        by_service: dict[str, list[ir.Instance]] = defaultdict(list)
        for instance in instances:
            by_service[instance.service].append(instance)
        self._services = {s: self._services.get(s) or _ServiceEntry(s) for s in mesh.services}
        entries = list(self._services.values())
        outputs = [e.output for e in entries]
        table = route.route_configuration_bytes(
            names.OUTBOUND_ROUTE, [o.virtual_host_entry for o in outputs] + [self._unknown_host]
        )
        targets = LazyUnion([o.route_targets for o in outputs])
        return MeshResources(
            clusters=ResourceSet(CLUSTER, (o.clusters for o in outputs)),
            endpoints=ResourceSet(
                ENDPOINT, (e.endpoints(by_service.get(e.service.name)) for e in entries)
            ),
            routes=ResourceSet.of(
                ROUTE, [resource_from_bytes(ROUTE, names.OUTBOUND_ROUTE, table, targets)]
            ),
        )

    def view(self, shared: MeshResources, proxy: ir.Proxy) -> dict[str, ResourceSet]:
        """Everything one proxy should have, per type URL."""
        local = self._local.get(proxy) or local_resources(proxy)
        self._local[proxy] = local
        view = {
            CLUSTER: shared.clusters.plus(local.app_cluster),
            ENDPOINT: shared.endpoints,
            LISTENER: local.listeners,
            ROUTE: shared.routes,
        }
        dangling = [
            ref
            for ref in local.listeners.refs()
            if ref not in view[ROUTE] and ref not in view[CLUSTER]
        ]
        if dangling:
            raise InconsistentSnapshot(f"listeners of {proxy.node_id} refer to missing {dangling}")
        return view

    def forget(self, proxy: ir.Proxy) -> None:
        self._local.pop(proxy, None)


def _instance_key(instance: ir.Instance) -> tuple[str, int]:
    return (instance.address, instance.port)


class _ServiceEntry:
    """A service's translation, and its endpoints for the members it had at the last change."""

    __slots__ = ("_endpoints", "_instances", "output", "service")

    def __init__(self, service: ir.Service) -> None:
        self.service = service
        self.output = translate_service(service)
        self._instances: tuple[ir.Instance, ...] | None = None
        self._endpoints: Part | None = None

    def endpoints(self, members: list[ir.Instance] | None) -> Part:
        instances = tuple(sorted(members, key=_instance_key)) if members else ()
        if self._endpoints is None or instances != self._instances:
            self._endpoints = translate_endpoints(self.service, instances)
            self._instances = instances
        return self._endpoints
