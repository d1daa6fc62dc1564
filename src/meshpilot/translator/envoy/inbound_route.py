"""The inbound route table: every request to the local app, and routes that HTTP filters
configure (a rate limit of their own) matched first so that each draws from its own bucket.

The old identity header is stripped from every request: a caller is known by its certificate
only, and an app must not be misled by what another app wrote."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2

from meshpilot import identity
from meshpilot.model import ir, names
from meshpilot.translator.envoy import route


def inbound_route_configuration(
    service: ir.Service | None,
    cluster: str,
    version: str | None = None,
    per_filter: route.PerRoute = route.no_per_route,
) -> route_pb2.RouteConfiguration:
    """The service's routes that filters configure (see `configured_routes`), then a catch-all
    to `cluster`. Responses carry the instance's `version`, so the caller's access log knows
    who answered."""
    catch_all = route.forward_all_virtual_host(names.INBOUND_ROUTE, cluster)
    forward = catch_all.routes[0].route
    routes = configured_routes(service, forward, per_filter) if service is not None else []
    vhost = rc.VirtualHost(
        name=catch_all.name,
        domains=catch_all.domains,
        routes=[*routes, *catch_all.routes],
        request_headers_to_remove=[identity.SOURCE_HEADER],
    )
    if version:
        vhost.response_headers_to_add.extend(
            route.header_value_options(ir.HeaderOps(set=((identity.VERSION_HEADER, version),)))
        )
    return route_pb2.RouteConfiguration(name=names.INBOUND_ROUTE, virtual_hosts=[vhost])


def configured_routes(
    service: ir.Service, forward: rc.RouteAction, per_filter: route.PerRoute
) -> list[rc.Route]:
    """The service's routes in file order up to the last one a filter configures (a rate limit
    of its own), each forwarding like the catch-all. Earlier routes are kept so that the
    destination picks the same first match as the caller did (they keep the filters' defaults:
    the service's bucket). Routes that match callers (`match.from`) are left out: the
    destination cannot tell callers' labels, and one matching any path would hide every later
    route's limit from every caller."""
    routes = [r for r in service.routes if r.match.caller is None]
    configs = [per_filter(service, r) for r in routes]
    last = max((i for i, found in enumerate(configs) if found), default=-1)
    return [
        rc.Route(
            name=names.route(service.name, r.name),
            match=route.route_match(r.match),
            route=forward,
            typed_per_filter_config=found,
        )
        for r, found in zip(routes[: last + 1], configs, strict=False)
    ]
