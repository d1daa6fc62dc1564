"""The inbound route table: every request to the local app, and routes with a rate limit of
their own matched first so that each draws from its own token bucket."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from meshpilot import identity
from meshpilot.model import ir, names
from meshpilot.translator.envoy import http_filters, rate_limit, route
from meshpilot.translator.envoy.common import typed


def inbound_route_configuration(
    service: ir.Service | None, cluster: str, version: str | None = None
) -> route_pb2.RouteConfiguration:
    """The service's rate-limited routes (see `limited_routes`), then a catch-all to `cluster`.
    Responses carry the instance's `version`, so the caller's access log knows who answered."""
    catch_all = route.forward_all_virtual_host(names.INBOUND_ROUTE, cluster)
    forward = catch_all.routes[0].route
    routes = limited_routes(service, forward) if service is not None else []
    vhost = rc.VirtualHost(
        name=catch_all.name, domains=catch_all.domains, routes=[*routes, *catch_all.routes]
    )
    if version:
        vhost.response_headers_to_add.extend(
            route.header_value_options(ir.HeaderOps(set=((identity.VERSION_HEADER, version),)))
        )
    return route_pb2.RouteConfiguration(name=names.INBOUND_ROUTE, virtual_hosts=[vhost])


def limited_routes(service: ir.Service, forward: rc.RouteAction) -> list[rc.Route]:
    """The service's routes in file order up to the last one with a rate limit, each forwarding
    like the catch-all. Earlier routes without a limit are kept so that the destination picks
    the same first match as the caller did (they fall back to the service's bucket)."""
    last = max((i for i, r in enumerate(service.routes) if r.rate_limit), default=-1)
    return [inbound_route(service, r, forward) for r in service.routes[: last + 1]]


def inbound_route(service: ir.Service, r: ir.Route, forward: rc.RouteAction) -> rc.Route:
    result = rc.Route(
        name=names.route(service.name, r.name), match=route.route_match(r.match), route=forward
    )
    if r.rate_limit is not None:
        bucket = rate_limit.local_rate_limit(
            r.rate_limit, names.rate_limit_stat_prefix(r.name), service.protocol == "grpc"
        )
        result.typed_per_filter_config[http_filters.LOCAL_RATE_LIMIT].CopyFrom(typed(bucket))
    return result
