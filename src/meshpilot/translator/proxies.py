"""Per-proxy assembly: a proxy's own resources (the cluster to its app, its listeners) and its
view, the resources it should have per type URL. A proxyless gRPC client has nothing of its
own: its view is the API listeners, route tables, clusters and endpoints of what it may call.

`proxy_view` is a pure function of the change's `MeshResources`, the proxy and the proxy's
previous view: everything it needs, the proxy's own service included, comes from its arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshpilot.model import ir, names, proxies
from meshpilot.translator import gateways
from meshpilot.translator.envoy import (
    access_log,
    cluster,
    http_filters,
    inbound_route,
    listener,
    mtls,
    tcp_proxy,
    tracing,
)
from meshpilot.translator.envoy.filter_plugin import Chain, FilterContext
from meshpilot.translator.envoy.http_connection_manager import HttpConnectionManagerBuilder
from meshpilot.translator.resources import Part, Resource, ResourceSet, resource
from meshpilot.translator.shared import MeshResources, Outbound, ProxyPolicy
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE

View = Mapping[str, ResourceSet]
_NO_POLICY = ProxyPolicy()
_NO_SCOPES = ResourceSet(SCOPED_ROUTE, ())  # a proxyless client routes by API listener
LOOPBACK = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class LocalResources:
    """A proxy's own resources: the cluster that reaches its app, its inbound and outbound
    listeners, and a listener per service it may call by port (tcp, `outbound_port`)."""

    app_cluster: Part
    listeners: ResourceSet


def local_resources(
    proxy: proxies.Proxy,
    service: ir.Service | None = None,
    by_port: Iterable[ir.Service] = (),
    policy: ProxyPolicy = _NO_POLICY,
) -> LocalResources:
    """`service` is the proxy's own service as the mesh defines it (None: not in the mesh);
    `by_port`: the services it reaches by port, tcp services first."""
    app = names.inbound_cluster(proxy.app_port)
    listeners = [
        _inbound_listener(proxy, service, app, policy),
        _outbound_listener(proxy, service, policy),
        *_port_listeners(proxy, service, by_port, policy),
    ]
    http2 = service is not None and service.speaks_http2
    app_cluster = cluster.static_cluster(app, proxy.app_ip, proxy.app_port, http2)
    return LocalResources(
        Part([resource(CLUSTER, app, app_cluster)]), ResourceSet.of(LISTENER, listeners)
    )


def _http_manager(
    chain: Chain, proxy: proxies.Proxy, service: ir.Service | None, policy: ProxyPolicy
) -> tuple[HttpConnectionManagerBuilder, list[str]]:
    """An HTTP connection manager with the chain's filters (those the order table has for this
    proxy), access log to the mixer and tracing; and the clusters all these use."""
    context = FilterContext(
        proxy.service, service, policy.policies, policy.mixer, policy.trust_domain
    )
    filters, refs = http_filters.http_filters(chain, context)
    manager = HttpConnectionManagerBuilder(chain).with_filters(filters)
    manager.trusting(_app_addresses(proxy) if chain == "outbound" else ())
    sampling = policy.sampling(service)
    if sampling is not None:
        collector = policy.telemetry.collector
        manager.with_tracing(tracing.tracing(sampling, collector, proxy.service))
        refs += [names.collector_cluster(collector.protocol)] if collector is not None else []
    if policy.access_log:
        log_name = names.INBOUND_LISTENER if chain == "inbound" else names.OUTBOUND_LISTENER
        manager.with_access_log(access_log.grpc_access_log(log_name, names.MIXER_CLUSTER))
        refs.append(names.MIXER_CLUSTER)
    return manager, refs


def _app_addresses(proxy: proxies.Proxy) -> tuple[str, ...]:
    """Where the app's calls to its sidecar come from: its own IP, or loopback (the source the
    kernel picks for a connection to a local address). Anyone else reaching the outbound port
    (another host, another mesh's client) is outside the mesh and its `x-envoy-*` headers are
    stripped; the inbound port trusts nobody's, not even other sidecars' (see `trusting`)."""
    return tuple(dict.fromkeys((proxy.app_ip, *LOOPBACK)))


def _inbound_listener(
    proxy: proxies.Proxy, service: ir.Service | None, app: str, policy: ProxyPolicy
) -> Resource:
    """IP:15006 to the app: HTTP through the service's policies and rate limits (or, for a tcp
    service, a plain TCP proxy). Responses say which version answered, for callers' logs."""
    tls = _inbound_tls(service, policy)
    if service is not None and not service.is_http:
        to_app = tcp_proxy.tcp_proxy(names.INBOUND_LISTENER, [(app, 100)])
        built = listener.tcp_listener(
            names.INBOUND_LISTENER, proxy.ip, proxies.INBOUND_PORT, "inbound", to_app, tls
        )
        return resource(LISTENER, names.INBOUND_LISTENER, built, refs=[app])
    version = dict(proxy.labels).get("version")
    routes = inbound_route.inbound_route_configuration(
        service, app, version, http_filters.INBOUND_ROUTES
    )
    manager, refs = _http_manager("inbound", proxy, service, policy)
    built = listener.http_listener(
        names.INBOUND_LISTENER,
        proxy.ip,
        proxies.INBOUND_PORT,
        "inbound",
        manager.with_route_config(routes).build(),
        tls,
    )
    return resource(LISTENER, names.INBOUND_LISTENER, built, refs=[app, *refs])


def _inbound_tls(service: ir.Service | None, policy: ProxyPolicy) -> listener.DownstreamTls | None:
    """mTLS on the inbound port when the mesh has identity, in the service's mode (strict for a
    sidecar whose service the mesh does not declare)."""
    if policy.trust_domain is None:
        return None
    permissive = service is not None and service.mtls == "permissive"
    return listener.DownstreamTls(mtls.downstream_mtls(policy.trust_domain), permissive)


def _outbound_listener(
    proxy: proxies.Proxy, service: ir.Service | None, policy: ProxyPolicy
) -> Resource:
    """15001 on the app's IP for its calls: every request leaves with this sidecar's identity."""
    manager, refs = _http_manager("outbound", proxy, service, policy)
    built = listener.http_listener(
        names.OUTBOUND_LISTENER,
        proxy.app_ip,
        proxies.OUTBOUND_PORT,
        "outbound",
        manager.with_scoped_routes(names.OUTBOUND_SCOPES).build(),
    )
    return resource(LISTENER, names.OUTBOUND_LISTENER, built, refs=refs)


def _port_listeners(
    proxy: proxies.Proxy,
    own: ir.Service | None,
    by_port: Iterable[ir.Service],
    policy: ProxyPolicy,
) -> list[Resource]:
    """One per service reached by port, on the app's IP: a tcp service at its port, an HTTP
    service at its `outbound_port`. Left out: a port that is the app's or a sidecar's (taken on
    that IP) and any but the first service on one port (validation reports both)."""
    taken = {proxy.app_port, proxies.ADMIN_PORT, proxies.INBOUND_PORT, proxies.OUTBOUND_PORT}
    listeners = []
    for service in by_port:
        port = service.outbound_port if service.is_http else service.port
        if port is not None and port not in taken:
            taken.add(port)
            if service.is_http:
                listeners.append(_http_port_listener(proxy, own, service, port, policy))
            else:
                listeners.append(_tcp_listener(proxy, service))
    return listeners


def _http_port_listener(
    proxy: proxies.Proxy,
    own: ir.Service | None,
    service: ir.Service,
    port: int,
    policy: ProxyPolicy,
) -> Resource:
    """Requests to the app's IP at `port` go to `service` whatever their Host (its route table
    answers to any): an outbound listener like 15001, but with one table and no scopes."""
    name = names.http_port_listener(service.name, port)
    table = names.outbound_route(service.name)
    manager, refs = _http_manager("outbound", proxy, own, policy)
    built = listener.http_listener(
        name, proxy.app_ip, port, "outbound", manager.with_rds(table).build()
    )
    return resource(LISTENER, name, built, refs=[table, *refs])


def _tcp_listener(proxy: proxies.Proxy, service: ir.Service) -> Resource:
    """Connections split as the service's (only) route says; it refers to the clusters it uses."""
    name = names.tcp_listener(service.name, service.port)
    to = service.routes[0].to if service.routes else (ir.Destination(None),)
    shares = [(names.outbound_cluster(service.name, service.port, d.subset), d.weight) for d in to]
    built = listener.tcp_listener(
        name, proxy.app_ip, service.port, "outbound", tcp_proxy.tcp_proxy(name, shares)
    )
    return resource(LISTENER, name, built, refs=[c for c, weight in shares if weight > 0])


# What a proxy's own resources are built from: its service, those it reaches by port, its policies.
LocalInputs = tuple[ir.Service | None, tuple[ir.Service, ...], ProxyPolicy]


@dataclass(frozen=True)
class ProxyView:
    """A proxy's view, and what it was assembled from (a proxyless client: `calls` alone)."""

    inputs: LocalInputs | None
    local: LocalResources | None
    calls: Outbound
    view: View


def proxy_view(
    shared: MeshResources, proxy: proxies.Proxy, previous: ProxyView | None = None
) -> ProxyView:
    """Everything one proxy should have, per type URL: all services, or only those its
    service's `egress:` names. `previous` (the proxy's last view) when nothing it is made of
    changed (most proxies, when another proxy joins or one service is edited); its own
    resources when only the services it calls changed."""
    if proxy.gateway:
        return _gateway_view(shared, proxy)
    service = shared.own_service(proxy.service)
    egress = service.egress if service is not None else None
    calls = shared.calls(egress, proxy.locality)
    if proxy.proxyless:
        return _proxyless_view(calls, previous)
    calls = shared.for_caller(calls, proxy)
    by_port = (*shared.tcp_services, *shared.port_services)
    if egress is not None:
        by_port = tuple(s for s in by_port if s.name in egress)
    inputs = (service, by_port, shared.proxy_policy(proxy.service))
    if previous is not None and previous.inputs == inputs and previous.local is not None:
        if previous.calls is calls:
            return previous
        view = _assemble(calls, previous.local, previous)
        return ProxyView(inputs, previous.local, calls, view)
    local = local_resources(proxy, *inputs)
    return ProxyView(inputs, local, calls, _assemble(calls, local))


def _gateway_view(shared: MeshResources, proxy: proxies.Proxy) -> ProxyView:
    """A gateway's: its listener and route table, and the clusters and endpoints of the
    services it sends to. Nothing (no listener) while the mesh declares no gateway so named.
    Built on each change: a mesh has few gateways."""
    gateway = shared.gateways.get(proxy.service)
    calls = shared.calls(gateway.services if gateway is not None else (), proxy.locality)
    own: list[Resource] = []
    tables: list[Resource] = []
    if gateway is not None:
        services = {s.name: s for s in map(shared.own_service, gateway.services) if s}
        targets = frozenset(
            t for name in services for t in shared.entries[name].output.route_targets
        )
        tables.append(gateways.gateway_route_table(gateway, services, targets))
        manager, refs = _http_manager("outbound", proxy, None, shared.proxy_policy(proxy.service))
        table = names.gateway_route(gateway.name)
        own.append(gateways.gateway_listener(gateway, manager.with_rds(table).build(), refs))
    view = {
        CLUSTER: calls.clusters,
        ENDPOINT: calls.endpoints,
        LISTENER: ResourceSet.of(LISTENER, own),
        SCOPED_ROUTE: _NO_SCOPES,
        ROUTE: ResourceSet.of(ROUTE, tables),
    }
    return ProxyView(None, None, calls, view)


def _proxyless_view(calls: Outbound, previous: ProxyView | None) -> ProxyView:
    """A gRPC client's: an API listener and route table per service it may call (those that
    speak HTTP/2), and the clusters and endpoints sidecars have. It asks for all of them by
    name, so it is served only what it asked for (the mixer's cluster, say, never)."""
    if previous is not None and previous.calls is calls:
        return previous
    api = calls.api
    view = {
        CLUSTER: calls.clusters,
        ENDPOINT: calls.endpoints,
        LISTENER: api.listeners,
        SCOPED_ROUTE: _NO_SCOPES,
        ROUTE: api.routes,
    }
    return ProxyView(None, None, calls, view)


def _assemble(calls: Outbound, local: LocalResources, previous: ProxyView | None = None) -> View:
    """The view of a proxy with these resources of its own, calling these services. Whether
    its listeners refer only to what it has is checked where it is served (xds/snapshot.py),
    so that one proxy's bad view is refused alone. Its clusters are `previous`'s (the same
    set) while the services' clusters are (a proxy joining changes endpoints only)."""
    if previous is not None and previous.calls.clusters is calls.clusters:
        clusters = previous.view[CLUSTER]
    else:
        clusters = calls.clusters.plus(local.app_cluster)
    return {
        CLUSTER: clusters,
        ENDPOINT: calls.endpoints,
        LISTENER: local.listeners,
        SCOPED_ROUTE: calls.scopes,
        ROUTE: calls.routes,
    }
