"""Per-service parts: what one service contributes to every proxy that may call it.

A service's clusters (one per subset) and virtual host depend on the service alone; its
endpoints also on the sidecars connected as its members. Each is built and serialized once per
change of those inputs, and shared as the same objects by every proxy's view.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import NamedTuple

from meshpilot.errors import InconsistentSnapshot
from meshpilot.model import ir, locality, names, proxies
from meshpilot.model.locality import Locality
from meshpilot.netaddr import is_ip
from meshpilot.translator.envoy import cluster, endpoint, http_filters, listener, route
from meshpilot.translator.envoy.filter_plugin import FilterContext
from meshpilot.translator.envoy.http_connection_manager import HttpConnectionManagerBuilder
from meshpilot.translator.resources import Part, Resource, resource, resource_from_bytes
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE


class ApiParts(NamedTuple):
    """What a service gives proxyless gRPC clients: an API listener and its route table."""

    listener: Part
    route: Part


@dataclass(frozen=True)
class ServiceOutput:
    """What one service contributes to every proxy: its clusters, its route table and the
    scopes that select it by Host; and, for a service a gRPC client can call, the name of its
    API listener (routed by the same virtual host)."""

    clusters: Part
    route: Part
    scopes: Part
    virtual_host_entry: bytes
    route_targets: frozenset[str]
    api_name: str | None = None
    callers: CallerTables | None = None  # when its routes match callers (`match.from`)

    @functools.cached_property
    def api(self) -> ApiParts | None:
        """Built when a proxyless client first needs it: most meshes have none."""
        if self.api_name is None:
            return None
        return api_parts(self.api_name, self.virtual_host_entry, self.route_targets)


class ServiceParts(NamedTuple):
    """A service's share of every proxy's outbound configuration; `by_caller` when callers in
    different localities see its members differently."""

    name: str
    output: ServiceOutput
    endpoints: Part
    by_caller: CallerEndpoints | None = None

    def endpoints_for(self, caller: Locality) -> Part:
        return self.endpoints if self.by_caller is None else self.by_caller.part(caller)


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
    targets |= {namer(r.mirror.subset) for r in service.routes if r.mirror is not None}
    missing = targets - set(cluster_names)
    if missing:
        raise InconsistentSnapshot(f"service {service.name}: routes to unknown {sorted(missing)}")
    external = is_external(service)
    built = _dns_clusters if external else _eds_clusters
    clusters = Part(built(service, cluster_names))
    table = names.outbound_route(service.name)
    routes, vhost_entry = route_table(for_callers(service, frozenset()), frozenset(targets))
    return ServiceOutput(
        clusters,
        routes,
        Part(_scopes(service, table)),
        vhost_entry,
        frozenset(targets),
        None if external else api_listener_name(service),
        CallerTables(service, frozenset(targets)) if service.matches_callers else None,
    )


def route_table(service: ir.Service, targets: frozenset[str]) -> tuple[Part, bytes]:
    """The service's outbound route table (its one virtual host), and that virtual host as an
    encoded entry of a table (for the API listeners' tables)."""
    external = is_external(service)
    virtual_host = route.virtual_host(
        service,
        _cluster_namer(service),
        http_filters.OUTBOUND_ROUTES,
        external_domains(service) if external else None,
    )
    vhost_entry = route.virtual_host_entry(virtual_host.SerializeToString(deterministic=True))
    table = names.outbound_route(service.name)
    routes = route.route_configuration_bytes(table, [vhost_entry])
    return Part([resource_from_bytes(ROUTE, table, routes, targets)]), vhost_entry


def for_callers(service: ir.Service, applying: frozenset[str]) -> ir.Service:
    """The service as seen by callers to whom, of its routes that match callers, those named in
    `applying` apply: the others left out (all of them for a gateway, a proxyless client, or a
    sidecar none names)."""
    if not service.matches_callers:
        return service
    kept = tuple(r for r in service.routes if r.match.caller is None or r.name in applying)
    return dataclasses.replace(service, routes=kept)


class CallerTables:
    """The route tables of a service whose routes match callers (`match.from`, Istio's
    sourceLabels): one per set of such routes that applies to a sidecar, built when a sidecar
    first needs it and kept while the service is unchanged (its `ServiceOutput` lives as long)."""

    __slots__ = ("_tables", "service", "targets")

    def __init__(self, service: ir.Service, targets: frozenset[str]) -> None:
        self.service = service
        self.targets = targets
        self._tables: dict[frozenset[str], Part] = {}

    def applying(self, proxy: proxies.Proxy) -> frozenset[str]:
        """The names of the routes that match callers and apply to `proxy`'s calls."""
        return frozenset(
            r.name
            for r in self.service.routes
            if r.match.caller is not None and r.match.caller.matches(proxy.service, proxy.labels)
        )

    def table(self, applying: frozenset[str]) -> Part:
        found = self._tables.get(applying)
        if found is None:
            found = route_table(for_callers(self.service, applying), self.targets)[0]
            self._tables[applying] = found
        return found


def _scopes(service: ir.Service, table: str) -> list[Resource]:
    """A scope per Host the service answers to (without the port): its name, and for an
    external service its endpoints' names."""
    hosts = [service.name]
    if is_external(service):
        named = {e.address for e in service.endpoints if not is_ip(e.address)}
        hosts += sorted(named - {service.name})
    scopes = []
    for host in hosts:
        name = names.route_scope(host)
        built = route.route_scope(name, host, table)
        scopes.append(resource(SCOPED_ROUTE, name, built, refs=[table]))
    return scopes


def api_listener_name(service: ir.Service) -> str | None:
    """gRPC clients call services that speak HTTP/2 (grpc, http2) as `xds:///NAME:PORT`."""
    return names.api_listener(service.name, service.port) if service.speaks_http2 else None


# The outbound chain's filters (CORS, fault, router) are the same whoever calls: every proxyless
# client's API listeners share them.
_CALLER = FilterContext(proxy_service="")


def api_parts(name: str, virtual_host_entry: bytes, targets: frozenset[str]) -> ApiParts:
    """The API listener `name`, routing over RDS with a route table of the same name that holds
    the service's virtual host (the sidecars' outbound routes, so splits are the same)."""
    filters, _ = http_filters.http_filters("outbound", _CALLER)
    manager = HttpConnectionManagerBuilder(name).with_filters(filters).with_rds(name).build()
    built = listener.api_listener(name, manager)
    table = route.route_configuration_bytes(name, [virtual_host_entry])
    return ApiParts(
        Part([resource(LISTENER, name, built, refs=[name])]),
        Part([resource_from_bytes(ROUTE, name, table, targets)]),
    )


def _eds_clusters(service: ir.Service, names: list[str]) -> list[Resource]:
    """`names` as `_service_cluster_names` gives them: the whole service's cluster with the
    service's policy, then each subset's with its own. Each refers to its assignment (same name).
    """
    tls, http2, peer = upstream_tls(service), service.speaks_http2, service.spiffe_id
    policies = [service.policy, *(s.policy for s in service.subsets)]
    return [
        resource_from_bytes(
            CLUSTER, name, cluster.eds_cluster_bytes(name, p, tls, http2, peer), (name,)
        )
        for name, p in zip(names, policies, strict=True)
    ]


def _dns_clusters(service: ir.Service, names: list[str]) -> list[Resource]:
    """An external service's clusters list their members inline (the static endpoints with the
    subset's labels, every one for the whole service): they refer to nothing."""
    tls, http2 = upstream_tls(service), service.speaks_http2
    whole: tuple[ir.Labels, ir.TrafficPolicy] = ((), service.policy)
    settings = [whole, *((s.labels, s.policy) for s in service.subsets)]
    resources = []
    for name, (labels, policy) in zip(names, settings, strict=True):
        wanted = frozenset(labels)
        members = [(e.address, e.port) for e in service.endpoints if wanted <= frozenset(e.labels)]
        built = cluster.dns_cluster(name, members, policy, tls, http2)
        resources.append(resource(CLUSTER, name, built))
    return resources


def upstream_tls(service: ir.Service) -> ir.UpstreamTls | None:
    """The service's TLS; without an `sni`, the endpoints' DNS name when they all share one."""
    tls = service.tls
    if tls is None or tls.sni:
        return tls
    hosts = {e.address for e in service.endpoints if not is_ip(e.address)}
    return dataclasses.replace(tls, sni=hosts.pop()) if len(hosts) == 1 else tls


def is_external(service: ir.Service) -> bool:
    """A service with a static endpoint named by DNS: Envoy resolves its members itself (a
    STRICT_DNS cluster per subset); connected sidecars of such a service are not members."""
    return any(not is_ip(e.address) for e in service.endpoints)


def external_domains(service: ir.Service) -> list[str]:
    """An external service also answers to its endpoints' names (`api.example.com` and
    `api.example.com:443`), so apps can call it by the name they know through the sidecar."""
    hosts = sorted({(e.address, e.port) for e in service.endpoints if not is_ip(e.address)})
    domains = dict.fromkeys(d for host, port in hosts for d in (host, f"{host}:{port}"))
    return [d for d in domains if d not in (service.name, f"{service.name}:{service.port}")]


Placed = tuple[str, int, Locality | None]


def translate_endpoints(service: ir.Service, instances: tuple[proxies.Instance, ...]) -> Part:
    """One assignment per EDS cluster of the service: static endpoints plus connected
    instances. An external service has none: its clusters carry their members inline."""
    if is_external(service):
        return Part([])
    return Part(_assignment(name, placed) for name, _, placed in _members(service, instances))


def _members(
    service: ir.Service, instances: tuple[proxies.Instance, ...]
) -> list[tuple[str, ir.TrafficPolicy, list[Placed]]]:
    """Each EDS cluster's name, policy and members: the whole service's, then each subset's."""
    members = [(e.address, e.port, frozenset(e.labels), e.locality) for e in service.endpoints]
    members += [(i.address, i.port, frozenset(i.labels), i.locality) for i in instances]
    namer = _cluster_namer(service)
    everyone = [(address, port, where) for address, port, _, where in members]
    clusters = [(namer(None), service.policy, everyone)]
    for subset in service.subsets:
        wanted = frozenset(subset.labels)
        chosen = [(a, p, where) for a, p, labels, where in members if wanted <= labels]
        clusters.append((namer(subset.name), subset.policy, chosen))
    return clusters


def _assignment(name: str, placed: list[Placed]) -> Resource:
    """Members without localities in one unnamed locality (the common, cheapest case), else
    grouped by locality, each group weighted by its size."""
    if any(where is not None for _, _, where in placed):
        built = endpoint.grouped_assignment_bytes(name, locality.groups(placed))
    else:
        built = endpoint.cluster_load_assignment_bytes(name, [(a, p) for a, p, _ in placed])
    return resource_from_bytes(ENDPOINT, name, built)


def _ordered_by_caller(policy: ir.TrafficPolicy) -> bool:
    """Whether callers' localities change a cluster's assignment: a distribution, or failover
    (on by default, active only with outlier detection, as in Istio)."""
    setting = policy.load_balancer.locality or locality.DEFAULT
    return setting.enabled and (bool(setting.distribute) or policy.outlier_detection is not None)


class CallerEndpoints:
    """A service's assignments as callers in each locality see them, made once per locality
    that asks while the members stay the same."""

    __slots__ = ("_clusters", "_parts")

    def __init__(self, clusters: list[tuple[str, ir.TrafficPolicy, list[Placed]]]) -> None:
        self._clusters = [(n, p, locality.groups(placed)) for n, p, placed in clusters]
        self._parts: dict[Locality, Part] = {}

    def part(self, caller: Locality) -> Part:
        found = self._parts.get(caller)
        if found is None:
            found = self._parts[caller] = Part(
                resource_from_bytes(ENDPOINT, name, endpoint.grouped_assignment_bytes(name, seen))
                for name, seen in self._seen_by(caller)
            )
        return found

    def _seen_by(self, caller: Locality) -> list[tuple[str, list[locality.Group]]]:
        seen = []
        for name, policy, groups in self._clusters:
            setting = policy.load_balancer.locality or locality.DEFAULT
            failover = policy.outlier_detection is not None
            seen.append((name, locality.for_caller(groups, caller, setting, failover)))
        return seen


def caller_endpoints(
    service: ir.Service, instances: tuple[proxies.Instance, ...]
) -> CallerEndpoints | None:
    """None when no caller's locality changes the service's assignments (no member has a
    locality, or no cluster orders members by it): every caller gets the same ones."""
    policies = [service.policy, *(s.policy for s in service.subsets)]
    if is_external(service) or not any(map(_ordered_by_caller, policies)):
        return None
    members: list[ir.StaticEndpoint | proxies.Instance] = [*service.endpoints, *instances]
    if all(m.locality is None for m in members):
        return None
    return CallerEndpoints(_members(service, instances))


def mixer_part(mixer: ir.Mixer) -> Part:
    """The cluster every sidecar reaches the mixer through."""
    built = cluster.mixer_cluster(names.MIXER_CLUSTER, mixer.address, mixer.spiffe_id)
    return Part([resource(CLUSTER, names.MIXER_CLUSTER, built)])


def collector_part(collector: ir.Collector) -> Part:
    """The cluster every sidecar reports its trace spans through."""
    name = names.collector_cluster(collector.protocol)
    grpc = collector.protocol == "opentelemetry"
    built = cluster.collector_cluster(name, collector.address, grpc)
    return Part([resource(CLUSTER, name, built)])


def _instance_key(instance: proxies.Instance) -> tuple[str, int]:
    return (instance.address, instance.port)


class ServiceEntry:
    """A service's translation, and its parts for the members it had at the last change."""

    __slots__ = ("instances", "output", "parts", "service")

    def __init__(self, service: ir.Service) -> None:
        self.service = service
        self.output = translate_service(service)
        self.instances: tuple[proxies.Instance, ...] | None = None
        self.parts: ServiceParts | None = None

    def parts_for(self, members: list[proxies.Instance] | None) -> ServiceParts:
        """The same object while the members are the same, so sets made of it are reused."""
        instances = tuple(sorted(members, key=_instance_key)) if members else ()
        if self.parts is None or instances != self.instances:
            endpoints = translate_endpoints(self.service, instances)
            by_caller = caller_endpoints(self.service, instances)
            self.parts = ServiceParts(self.service.name, self.output, endpoints, by_caller)
            self.instances = instances
        return self.parts
