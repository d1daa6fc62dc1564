"""The global rate limit: one count for every instance of a service, kept by the mixer.

Envoy's `ratelimit` filter in the inbound chain of a service with a global limit asks the
mixer's `envoy.service.ratelimit.v3.RateLimitService` about each request, through the same
`mixer` cluster as ext_authz. The descriptor names the limit: (service, NAME), plus (route,
NAME) for a route's own limit, plus (HEADER, value) for a keyed one (left out when the request
has no such header: those requests share one count). The mixer looks the limit up in the mesh
file it reads too. When the mixer cannot answer, requests pass (`failure_mode_deny: false`,
Istio's and Envoy's default): a rate limit protects capacity, and an outage of its counters
should not become an outage of the service.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.core.v3 import config_source_pb2
from envoy.config.ratelimit.v3 import rls_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2

from meshpilot.model import ir, names
from meshpilot.translator.envoy.common import duration
from meshpilot.translator.envoy.ext_authz import mixer_grpc_service
from meshpilot.translator.envoy.filter_plugin import INBOUND, FilterContext, HttpFilter
from meshpilot.translator.envoy.rate_limit import header_action

RATELIMIT = "envoy.filters.http.ratelimit"
_V3 = config_source_pb2.ApiVersion.Value("V3")


def _entry(key: str, value: str) -> route_pb2.RateLimit.Action:
    return route_pb2.RateLimit.Action(
        generic_key=route_pb2.RateLimit.Action.GenericKey(
            descriptor_key=key, descriptor_value=value
        )
    )


def descriptor(service: str, route: str | None, limit: ir.RateLimit) -> route_pb2.RateLimit:
    """The actions that make the descriptor naming this limit (see the module's docstring)."""
    actions = [_entry(names.RATE_LIMIT_SERVICE_KEY, service)]
    if route is not None:
        actions.append(_entry(names.RATE_LIMIT_ROUTE_KEY, route))
    if limit.key_header is not None:
        actions.append(header_action(limit.key_header))
    return route_pb2.RateLimit(actions=actions)


def global_rate_limit(
    mixer: ir.Mixer, service: ir.Service, own: ir.RateLimit | None
) -> rate_limit_pb2.RateLimit:
    """Checks go to the mixer; the service's own limit, if any, applies to routes without one."""
    config = rate_limit_pb2.RateLimit(
        domain=names.RATE_LIMIT_DOMAIN,
        failure_mode_deny=False,
        timeout=duration(mixer.timeout_ms),
        rate_limit_service=rls_pb2.RateLimitServiceConfig(
            grpc_service=mixer_grpc_service(names.MIXER_CLUSTER), transport_api_version=_V3
        ),
        rate_limited_as_resource_exhausted=service.protocol == "grpc",
    )
    if own is not None:
        config.rate_limits.append(descriptor(service.name, None, own))
    return config


def _config(context: FilterContext) -> rate_limit_pb2.RateLimit | None:
    service = context.service
    if service is None or context.mixer is None or not service.limits("global"):
        return None
    return global_rate_limit(context.mixer, service, service.limits("global").get(None))


def _clusters(context: FilterContext) -> Sequence[str]:
    return [names.MIXER_CLUSTER] if _config(context) is not None else []


def _per_route(service: ir.Service, route: ir.Route) -> rate_limit_pb2.RateLimitPerRoute | None:
    """A route's own limit, counted apart from the service's."""
    limit = route.rate_limit
    if limit is None or limit.scope != "global":
        return None
    return rate_limit_pb2.RateLimitPerRoute(
        rate_limits=[descriptor(service.name, route.name, limit)]
    )


FILTER = HttpFilter(RATELIMIT, INBOUND, _config, _clusters, per_route=_per_route)
