"""CORS: every outbound chain carries Envoy's CORS filter, doing nothing by itself; a route with
a `cors:` policy (its own or its service's) gives it a per-route CorsPolicy. The caller's
sidecar (or gateway) then answers a preflight from an allowed origin itself and adds
access-control-allow-origin to the answers of actual cross-origin requests.

Proxyless gRPC clients share the outbound chain and route tables and know no CORS filter: the
filter and its per-route configs are marked optional, which such a client skips rather than
refuses (Envoy, which knows the filter, applies them)."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.cors.v3 import cors_pb2

from meshpilot.model import ir
from meshpilot.translator.envoy.common import typed
from meshpilot.translator.envoy.filter_plugin import OUTBOUND, FilterContext, HttpFilter
from meshpilot.translator.envoy.route import string_matcher

_IDLE = cors_pb2.Cors()


def cors_policy(cors: ir.Cors) -> cors_pb2.CorsPolicy:
    """Envoy's lists are comma-separated strings; the max age is in seconds."""
    policy = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(o) for o in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age_s is not None:
        policy.max_age = str(cors.max_age_s)
    if cors.allow_credentials:
        policy.allow_credentials.value = True
    return policy


def _config(context: FilterContext) -> cors_pb2.Cors:
    return _IDLE


def _per_route(service: ir.Service, route: ir.Route) -> rc.FilterConfig | None:
    if route.cors is None:
        return None
    return rc.FilterConfig(config=typed(cors_policy(route.cors)), is_optional=True)


FILTER = HttpFilter(
    "envoy.filters.http.cors", OUTBOUND, _config, per_route=_per_route, optional=True
)
