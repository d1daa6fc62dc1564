"""MeshIR + live instances -> serialized resources, and the view each proxy receives.

The Translator keeps the output of the previous change keyed by input value, so an edit to one
service re-translates and re-serializes only that service; everything else is reused as bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from meshpilot.errors import InconsistentSnapshot
from meshpilot.gc_pause import gc_paused
from meshpilot.model import ir, names, proxies
from meshpilot.netaddr import is_ip
from meshpilot.translator.envoy import (
    access_log,
    cluster,
    endpoint,
    ext_authz,
    http_filters,
    inbound_route,
    listener,
    rate_limit,
    rbac,
    route,
    tcp_proxy,
)
from meshpilot.translator.envoy.http_connection_manager import HttpConnectionManagerBuilder
from meshpilot.translator.envoy.source_identity import source_identity
from meshpilot.translator.resources import (
    LazyUnion,
    Part,
    Resource,
    ResourceSet,
    resource,
    resource_from_bytes,
)
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE

View = Mapping[str, ResourceSet]


@dataclass(frozen=True)
class ServiceOutput:
    """What one service contributes to every proxy: its clusters and its virtual host."""

    clusters: Part
    virtual_host_entry: bytes
    route_targets: frozenset[str]


class ServiceParts(NamedTuple):
    """A service's share of every proxy's outbound configuration."""

    name: str
    output: ServiceOutput
    endpoints: Part


@dataclass(frozen=True)
class Outbound:
    """What a proxy needs to call services: their clusters, endpoints and routes."""

    clusters: ResourceSet
    endpoints: ResourceSet
    routes: ResourceSet


_UNKNOWN_HOST = route.virtual_host_entry(
    route.unknown_host_virtual_host().SerializeToString(deterministic=True)
)


def outbound(
    services: Sequence[ServiceParts],
    shared_clusters: Sequence[Part],
    previous: Outbound | None = None,
) -> Outbound:
    """Sets for these services (the route table ends with the 404 for unknown hosts), plus
    clusters every proxy has (the mixer's).

    A set made of the same parts as in `previous` (the same objects: a proxy joining changes
    only its service's endpoints) is `previous`'s: proxies keep the very sets they have, with
    their bytes, versions and every answer derived from them.
    """
    outputs = [s.output for s in services]
    cluster_parts = [*(o.clusters for o in outputs), *shared_clusters]
    endpoint_parts = [s.endpoints for s in services]
    if previous is not None:
        clusters = _reused(CLUSTER, cluster_parts, previous.clusters)
        endpoints = _reused(ENDPOINT, endpoint_parts, previous.endpoints)
        if clusters is previous.clusters:  # the same services (each owns its clusters' part)
            same = endpoints is previous.endpoints
            return previous if same else Outbound(clusters, endpoints, previous.routes)
    else:
        clusters, endpoints = (
            ResourceSet(CLUSTER, cluster_parts),
            ResourceSet(ENDPOINT, endpoint_parts),
        )
    table = route.route_configuration_bytes(
        names.OUTBOUND_ROUTE, [o.virtual_host_entry for o in outputs] + [_UNKNOWN_HOST]
    )
    targets = LazyUnion([o.route_targets for o in outputs])
    routes = ResourceSet.of(
        ROUTE, [resource_from_bytes(ROUTE, names.OUTBOUND_ROUTE, table, targets)]
    )
    return Outbound(clusters, endpoints, routes)


def _reused(type_url: str, parts: list[Part], previous: ResourceSet) -> ResourceSet:
    """`previous` when it is made of exactly these parts (the same objects), else a new set."""
    same = len(previous.parts) == len(parts) and all(map(operator.is_, previous.parts, parts))
    return previous if same else ResourceSet(type_url, parts)


@dataclass(frozen=True)
class MeshResources:
    """The part of the configuration that all proxies share after one change."""

    full: Outbound  # every service, for proxies whose service has no `egress:`
    # The tcp services a proxy may call: each gets a listener of its own on the proxy's IP.
    tcp_services: tuple[ir.Service, ...] = ()
    policies: Mapping[str, tuple[ir.Policy, ...]] = field(default_factory=dict)
    mixer: ir.Mixer | None = None
    telemetry: ir.Telemetry = field(default_factory=ir.Telemetry)
    # What scoped views (`egress:`) are assembled from, the previous change's (reused where
    # unchanged, see `outbound`) and the ones made so far.
    services: tuple[ServiceParts, ...] = ()
    shared_clusters: tuple[Part, ...] = ()
    previous_scoped: Mapping[tuple[str, ...], Outbound] = field(default_factory=dict)
    _scoped: dict[tuple[str, ...], Outbound] = field(default_factory=dict, compare=False)
    _policies: dict[str, ProxyPolicy] = field(default_factory=dict, compare=False)

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.services)}

    def scoped(self, egress: tuple[str, ...]) -> Outbound:
        """The clusters, endpoints and routes of just these services (built once per change for
        each distinct egress list, shared by every proxy that has it)."""
        found = self._scoped.get(egress)
        if found is None:
            positions = self._positions
            chosen = sorted(positions[name] for name in egress if name in positions)
            parts = [self.services[i] for i in chosen]
            previous = self.previous_scoped.get(egress)
            found = self._scoped[egress] = outbound(parts, self.shared_clusters, previous)
        return found

    def proxy_policy(self, service: str) -> ProxyPolicy:
        """One object per service and change, so a proxy's cached inputs compare by identity."""
        found = self._policies.get(service)
        if found is None:
            policies = self.policies.get(service, ())
            found = self._policies[service] = ProxyPolicy(policies, self.mixer, self.telemetry)
        return found


@dataclass(frozen=True)
class ProxyPolicy:
    """What a proxy's listeners need from the mesh besides its own service: the policies its
    sidecar enforces, where the mixer is, and what to log and trace."""

    policies: tuple[ir.Policy, ...] = ()
    mixer: ir.Mixer | None = None
    telemetry: ir.Telemetry = field(default_factory=ir.Telemetry)

    def of_action(self, action: str) -> list[ir.Policy]:
        return [p for p in self.policies if p.action == action]

    @property
    def access_log(self) -> bool:
        return self.telemetry.access_log and self.mixer is not None

    def sampling(self, service: ir.Service | None) -> float | None:
        if service is not None and service.tracing_sampling is not None:
            return service.tracing_sampling
        return self.telemetry.sampling


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
    virtual_host = route.virtual_host(service, namer)
    if external:
        _reach_by_endpoint_names(virtual_host, service)
    vhost = virtual_host.SerializeToString(deterministic=True)
    return ServiceOutput(clusters, route.virtual_host_entry(vhost), frozenset(targets))


def _eds_clusters(service: ir.Service, names: list[str]) -> list[Resource]:
    """`names` as `_service_cluster_names` gives them: the whole service's cluster with the
    service's policy, then each subset's with its own. Each refers to its assignment (same name).
    """
    tls, http2 = upstream_tls(service), service.speaks_http2
    policies = [service.policy, *(s.policy for s in service.subsets)]
    return [
        resource_from_bytes(CLUSTER, name, cluster.eds_cluster_bytes(name, p, tls, http2), (name,))
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


def _reach_by_endpoint_names(
    virtual_host: route_components_pb2.VirtualHost, service: ir.Service
) -> None:
    """An external service's virtual host also answers to its endpoints' names, and requests
    reach each endpoint with its name as Host, as if the app had called it directly."""
    virtual_host.domains.extend(external_domains(service))
    for r in virtual_host.routes:
        if r.HasField("route") and r.route.WhichOneof("host_rewrite_specifier") is None:
            r.route.auto_host_rewrite.value = True


def external_domains(service: ir.Service) -> list[str]:
    """An external service also answers to its endpoints' names (`api.example.com` and
    `api.example.com:443`), so apps can call it by the name they know through the sidecar."""
    hosts = sorted({(e.address, e.port) for e in service.endpoints if not is_ip(e.address)})
    domains = dict.fromkeys(d for host, port in hosts for d in (host, f"{host}:{port}"))
    return [d for d in domains if d not in (service.name, f"{service.name}:{service.port}")]


def translate_endpoints(service: ir.Service, instances: tuple[proxies.Instance, ...]) -> Part:
    """One assignment per EDS cluster of the service: static endpoints plus connected
    instances. An external service has none: its clusters carry their members inline."""
    if is_external(service):
        return Part([])
    members = [(e.address, e.port, frozenset(e.labels)) for e in service.endpoints]
    members += [(i.address, i.port, frozenset(i.labels)) for i in instances]
    namer = _cluster_namer(service)
    everyone = [(address, port) for address, port, _ in members]
    assignments = [(namer(None), everyone)]
    for subset in service.subsets:
        wanted = frozenset(subset.labels)
        chosen = [(address, port) for address, port, labels in members if wanted <= labels]
        assignments.append((namer(subset.name), chosen))
    return Part(
        resource_from_bytes(ENDPOINT, name, endpoint.cluster_load_assignment_bytes(name, chosen))
        for name, chosen in assignments
    )


@dataclass(frozen=True)
class LocalResources:
    """A proxy's own resources: the cluster that reaches its app, its inbound and outbound
    listeners, and an outbound TCP listener per tcp service it may call."""

    app_cluster: Part
    listeners: ResourceSet


def local_resources(
    proxy: proxies.Proxy,
    service: ir.Service | None = None,
    tcp_services: Iterable[ir.Service] = (),
    policy: ProxyPolicy = ProxyPolicy(),
) -> LocalResources:
    """`service` is the proxy's own service as the mesh defines it (None: not in the mesh)."""
    app = names.inbound_cluster(proxy.app_port)
    listeners = [
        _inbound_listener(proxy, service, app, policy),
        _outbound_listener(proxy, service, policy),
        *_tcp_listeners(proxy, tcp_services),
    ]
    app_cluster = resource(CLUSTER, app, _app_cluster(proxy, service, app))
    return LocalResources(Part([app_cluster]), ResourceSet.of(LISTENER, listeners))


def _inbound_listener(
    proxy: proxies.Proxy, service: ir.Service | None, app: str, policy: ProxyPolicy
) -> Resource:
    """IP:15006 to the app: HTTP through the service's policies and rate limits (or, for a tcp
    service, a plain TCP proxy). Responses say which version answered, for callers' logs."""
    if service is not None and not service.is_http:
        to_app = tcp_proxy.tcp_proxy(names.INBOUND_LISTENER, [(app, 100)])
        built = listener.tcp_listener(
            names.INBOUND_LISTENER, proxy.ip, proxies.INBOUND_PORT, to_app
        )
        return resource(LISTENER, names.INBOUND_LISTENER, built, refs=[app])
    version = dict(proxy.labels).get("version")
    routes = inbound_route.inbound_route_configuration(service, app, version)
    manager = HttpConnectionManagerBuilder("inbound").with_route_config(routes)
    _with_policies(manager, proxy.service, policy)
    if service is not None and rate_limit.has_rate_limits(service):
        grpc = service.protocol == "grpc"
        bucket = rate_limit.local_rate_limit(
            service.rate_limit, names.rate_limit_stat_prefix(), grpc
        )
        manager.with_filter(http_filters.LOCAL_RATE_LIMIT, bucket)
    refs = [app, *_with_telemetry(manager, names.INBOUND_LISTENER, service, policy)]
    if policy.mixer is not None and policy.of_action("custom"):
        refs.append(names.MIXER_CLUSTER)
    built = listener.http_listener(
        names.INBOUND_LISTENER, proxy.ip, proxies.INBOUND_PORT, manager.build()
    )
    return resource(LISTENER, names.INBOUND_LISTENER, built, refs=refs)


def _with_policies(
    manager: HttpConnectionManagerBuilder, service: str, policy: ProxyPolicy
) -> None:
    """The service's policies, each kind as its filter (the order table runs them in the
    contract's order). Static ones are Envoy's RBAC; custom ones call the mixer."""
    audit, deny, allow = (policy.of_action(a) for a in ("audit", "deny", "allow"))
    custom = policy.of_action("custom")
    if audit:
        manager.with_filter(http_filters.RBAC_AUDIT, rbac.audit_rbac(audit))
    if custom and policy.mixer is not None:
        check = ext_authz.ext_authz(policy.mixer, names.MIXER_CLUSTER, service)
        manager.with_filter(http_filters.EXT_AUTHZ, ext_authz.ext_authz_for(custom, check))
    if deny:
        manager.with_filter(http_filters.RBAC_DENY, rbac.enforcing_rbac("deny", deny))
    if allow:
        manager.with_filter(http_filters.RBAC_ALLOW, rbac.enforcing_rbac("allow", allow))


def _with_telemetry(
    manager: HttpConnectionManagerBuilder,
    log_name: str,
    service: ir.Service | None,
    policy: ProxyPolicy,
) -> list[str]:
    """Access log to the mixer and trace sampling; returns the clusters this makes it use."""
    sampling = policy.sampling(service)
    if sampling is not None:
        manager.with_tracing(sampling)
    if not policy.access_log:
        return []
    manager.with_access_log(access_log.grpc_access_log(log_name, names.MIXER_CLUSTER))
    return [names.MIXER_CLUSTER]


def _outbound_listener(
    proxy: proxies.Proxy, service: ir.Service | None, policy: ProxyPolicy
) -> Resource:
    """IP:15001 for the app's calls: every request leaves with this sidecar's identity."""
    manager = (
        HttpConnectionManagerBuilder("outbound")
        .with_rds(names.OUTBOUND_ROUTE)
        .with_filter(http_filters.SOURCE_IDENTITY, source_identity(proxy.service))
        .with_filter(http_filters.FAULT, fault_pb2.HTTPFault())
    )
    telemetry = _with_telemetry(manager, names.OUTBOUND_LISTENER, service, policy)
    refs = [names.OUTBOUND_ROUTE, *telemetry]
    built = listener.http_listener(
        names.OUTBOUND_LISTENER, proxy.ip, proxies.OUTBOUND_PORT, manager.build()
    )
    return resource(LISTENER, names.OUTBOUND_LISTENER, built, refs=refs)


def _tcp_listeners(proxy: proxies.Proxy, tcp_services: Iterable[ir.Service]) -> list[Resource]:
    """One per tcp service, on the proxy's IP at the service's port. Left out: a service on the
    app's port or a sidecar port (taken on that IP) and any but the first (by name) on one port."""
    taken = {proxy.app_port, proxies.ADMIN_PORT, proxies.INBOUND_PORT, proxies.OUTBOUND_PORT}
    listeners = []
    for service in tcp_services:
        if service.port not in taken:
            taken.add(service.port)
            listeners.append(_tcp_listener(proxy, service))
    return listeners


def _tcp_listener(proxy: proxies.Proxy, service: ir.Service) -> Resource:
    """Connections split as the service's (only) route says; it refers to the clusters it uses."""
    name = names.tcp_listener(service.name, service.port)
    to = service.routes[0].to if service.routes else (ir.Destination(None),)
    shares = [(names.outbound_cluster(service.name, service.port, d.subset), d.weight) for d in to]
    built = listener.tcp_listener(name, proxy.ip, service.port, tcp_proxy.tcp_proxy(name, shares))
    return resource(LISTENER, name, built, refs=[c for c, weight in shares if weight > 0])


def _app_cluster(proxy: proxies.Proxy, service: ir.Service | None, app: str) -> cluster_pb2.Cluster:
    """The local app at IP:app_port, spoken to in HTTP/2 when the service is http2 or grpc."""
    result = cluster.static_cluster(app, proxy.ip, proxy.app_port)
    if service is not None and service.speaks_http2:
        for key, options in cluster.http2_protocol_options().items():
            result.typed_extension_protocol_options[key].CopyFrom(options)
    return result


# What a proxy's own resources are built from: its service, the tcp services, its policies.
_LocalInputs = tuple[ir.Service | None, tuple[ir.Service, ...], ProxyPolicy]


class Translator:
    """Translates whole meshes, reusing the previous change's output for unchanged inputs.

    Consistency is checked where resources are made: a service's routes against its clusters when
    the service is translated, a proxy's listeners against its view when the view is assembled.
    """

    def __init__(self) -> None:
        self._services: dict[str, _ServiceEntry] = {}
        self._mixer_part: tuple[str, Part] | None = None
        self._views: dict[proxies.Proxy, _ProxyView] = {}
        self._last: MeshResources | None = None
        self._tcp: dict[str, _ServiceEntry] = {}  # the tcp services' entries, by name

    def translate(self, mesh: ir.MeshIR, instances: Iterable[proxies.Instance]) -> MeshResources:
        with gc_paused():
            return self._translate(mesh, instances)

    def _translate(self, mesh: ir.MeshIR, instances: Iterable[proxies.Instance]) -> MeshResources:
        by_service: dict[str, list[proxies.Instance]] = defaultdict(list)
        for instance in instances:
            by_service[instance.service].append(instance)
        created: list[_ServiceEntry] = []
        self._services = self._entries(mesh, created)
        parts = _service_parts(self._services.values(), by_service)
        shared_clusters = tuple(self._mixer(mesh))
        last = self._last
        policies: dict[str, list[ir.Policy]] = defaultdict(list)
        for p in mesh.policies:
            policies[p.service].append(p)
        self._last = MeshResources(
            full=outbound(parts, shared_clusters, last.full if last is not None else None),
            tcp_services=self._tcp_services(created),
            policies={name: tuple(found) for name, found in policies.items()},
            mixer=mesh.mixer,
            telemetry=mesh.telemetry,
            services=tuple(parts),
            shared_clusters=shared_clusters,
            previous_scoped=last._scoped if last is not None else {},
        )
        return self._last

    def _mixer(self, mesh: ir.MeshIR) -> list[Part]:
        """The cluster every sidecar reaches the mixer through, when the mesh has one."""
        if mesh.mixer is None:
            return []
        if self._mixer_part is None or self._mixer_part[0] != mesh.mixer.address:
            built = cluster.mixer_cluster(names.MIXER_CLUSTER, mesh.mixer.address)
            part = Part([resource(CLUSTER, names.MIXER_CLUSTER, built)])
            self._mixer_part = (mesh.mixer.address, part)
        return [self._mixer_part[1]]

    def view(self, shared: MeshResources, proxy: proxies.Proxy) -> View:
        """Everything one proxy should have, per type URL: all services, or only those its
        service's `egress:` names. The proxy's previous view when nothing it is made of changed
        (most proxies, when another proxy joins or one service is edited)."""
        service = self._own_service(shared, proxy)
        egress = service.egress if service is not None else None
        calls = shared.scoped(egress) if egress is not None else shared.full
        tcp = shared.tcp_services
        if egress is not None:
            tcp = tuple(s for s in tcp if s.name in egress)
        inputs = (service, tcp, shared.proxy_policy(proxy.service))
        cached = self._views.get(proxy)
        if cached is not None and cached.calls is calls and cached.inputs == inputs:
            return cached.view
        if cached is not None and cached.inputs == inputs:
            local = cached.local
        else:
            local = local_resources(proxy, *inputs)
        view = _assemble(proxy, calls, local)
        self._views[proxy] = _ProxyView(inputs, local, calls, view)
        return view

    def _entries(self, mesh: ir.MeshIR, created: list[_ServiceEntry]) -> dict[str, _ServiceEntry]:
        """Each service's entry: the previous change's for an unchanged service, else a new one
        (noted in `created`). Entries are found by name (a C string hash), and the same IR object
        needs no comparison: an edit of one service of 10,000 costs 10,000 dictionary lookups,
        not 10,000 deep hashes. A plain loop: this is the hot path of every change."""
        previous = self._services
        entries = {}
        for service in mesh.services:
            entry = previous.get(service.name)
            if entry is None or (entry.service is not service and entry.service != service):
                entry = _entry(service, created)
            entries[service.name] = entry
        return entries

    def _tcp_services(self, created: list[_ServiceEntry]) -> tuple[ir.Service, ...]:
        """The tcp services by name, updated from what this change made (not by a scan of every
        service: this runs on every change of a 10,000-service mesh)."""
        kept = {n: e for n, e in self._tcp.items() if self._services.get(n) is e}
        kept.update((e.service.name, e) for e in created if e.service.protocol == "tcp")
        self._tcp = dict(sorted(kept.items()))
        return tuple(e.service for e in self._tcp.values())

    def _own_service(self, shared: MeshResources, proxy: proxies.Proxy) -> ir.Service | None:
        """The proxy's service as first translated: the same object while the service is
        unchanged (as are `tcp_services`), so a proxy's cached resources are found by identity."""
        entry = self._services.get(proxy.service)
        return entry.service if entry is not None else None

    def forget(self, proxy: proxies.Proxy) -> None:
        self._views.pop(proxy, None)


@dataclass(frozen=True)
class _ProxyView:
    """A proxy's last view, and what it was assembled from."""

    inputs: _LocalInputs
    local: LocalResources
    calls: Outbound
    view: View


def _assemble(proxy: proxies.Proxy, calls: Outbound, local: LocalResources) -> View:
    """The view of a proxy with these resources of its own, calling these services; its
    listeners must refer only to routes and clusters it has."""
    view = {
        CLUSTER: calls.clusters.plus(local.app_cluster),
        ENDPOINT: calls.endpoints,
        LISTENER: local.listeners,
        ROUTE: calls.routes,
    }
    dangling = [
        ref for ref in local.listeners.refs() if ref not in view[ROUTE] and ref not in view[CLUSTER]
    ]
    if dangling:
        raise InconsistentSnapshot(f"listeners of {proxy.node_id} refer to missing {dangling}")
    return view


def _entry(service: ir.Service, created: list[_ServiceEntry]) -> _ServiceEntry:
    """A new service entry, noted in `created`."""
    entry = _ServiceEntry(service)
    created.append(entry)
    return entry


def _instance_key(instance: proxies.Instance) -> tuple[str, int]:
    return (instance.address, instance.port)


def _service_parts(
    entries: Iterable[_ServiceEntry], by_service: dict[str, list[proxies.Instance]]
) -> list[ServiceParts]:
    """Each service's parts; a service with no instance, now or before, keeps its parts
    without a call (most services of a big mesh, on every change). A plain loop: this runs over
    every service on every change."""
    parts = []
    for entry in entries:
        members = by_service.get(entry.service.name)
        if members is None and entry.instances == () and entry.parts is not None:
            parts.append(entry.parts)
        else:
            parts.append(entry.parts_for(members))
    return parts


class _ServiceEntry:
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
            self.parts = ServiceParts(self.service.name, self.output, endpoints)
            self.instances = instances
        return self.parts
