"""A gateway's own resources: its route table (a virtual host per Host it answers to, each
sending paths to services through the services' own routes, as a sidecar of a caller would)
and its listener, with TLS from certificate files when the mesh gives them."""

from __future__ import annotations

from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from meshpilot.model import ir, names
from meshpilot.translator.envoy import http_filters, listener, route
from meshpilot.translator.envoy.common import typed
from meshpilot.translator.envoy.tls import TLS_TRANSPORT_SOCKET
from meshpilot.translator.resources import Resource, resource
from meshpilot.translator.services import for_callers, is_external
from meshpilot.xds.types import LISTENER, ROUTE


def gateway_route_table(
    gateway: ir.Gateway, services: Mapping[str, ir.Service], targets: frozenset[str]
) -> Resource:
    """`targets`: the clusters its routes send to (the services' own route targets)."""
    name = names.gateway_route(gateway.name)
    hosts = [_virtual_host(gateway, host, services) for host in gateway.hosts]
    table = route_pb2.RouteConfiguration(name=name, virtual_hosts=hosts)
    return resource(ROUTE, name, table, refs=targets)


def _virtual_host(
    gateway: ir.Gateway, host: ir.GatewayHost, services: Mapping[str, ir.Service]
) -> rc.VirtualHost:
    """The host's entries in order; each entry is its service's routes, in theirs, limited to
    the entry's path prefix, but for routes that match callers (`match.from`: sidecars of
    services). A service missing from the mesh adds nothing (validation says so)."""
    routes = []
    for entry in host.routes:
        service = services.get(entry.service)
        if service is None or not service.is_http:
            continue
        for r in for_callers(service, frozenset()).routes:
            built = _service_route(service, r)
            if entry.path_prefix is not None:
                prefix = ir.ValueMatch(":path", "prefix", entry.path_prefix)
                built.match.headers.append(route.header_matcher(prefix))
            routes.append(built)
    return rc.VirtualHost(name=f"{gateway.name}|{host.host}", domains=[host.host], routes=routes)


def _service_route(service: ir.Service, r: ir.Route) -> rc.Route:
    def cluster_of(subset: str | None) -> str:
        return names.outbound_cluster(service.name, service.port, subset)

    return route.route(
        service, r, cluster_of, http_filters.OUTBOUND_ROUTES, rewrite_host=is_external(service)
    )


def gateway_listener(
    gateway: ir.Gateway, manager: hcm.HttpConnectionManager, refs: list[str]
) -> Resource:
    """At the gateway's address; Host ports are ignored (`demo.local:8000` is `demo.local`)."""
    name = names.gateway_listener(gateway.name)
    table = names.gateway_route(gateway.name)
    manager.strip_any_host_port = True
    tls = _server_tls(*gateway.tls_files) if gateway.tls_files else None
    built = listener.http_listener(name, gateway.address, gateway.port, "outbound", manager, tls)
    return resource(LISTENER, name, built, refs=[table, *refs])


def _server_tls(cert_file: str, key_file: str) -> listener.DownstreamTls:
    """TLS at the edge with the mesh's certificate files (Envoy reads them, and re-reads
    them when they change); HTTP/2 or 1.1 by ALPN."""
    certificate = common_pb2.TlsCertificate(
        certificate_chain=base_pb2.DataSource(filename=cert_file),
        private_key=base_pb2.DataSource(filename=key_file),
    )
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[certificate], alpn_protocols=["h2", "http/1.1"]
        )
    )
    socket = base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=typed(context))
    return listener.DownstreamTls(socket)
