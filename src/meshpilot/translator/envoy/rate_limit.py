"""The local rate limit: a token bucket in the destination's sidecar, for a service or a route.

Envoy's `local_ratelimit` filter runs in the inbound chain of a service that has any local limit
(see `http_filters.ORDER` for its place). The filter-level config is the service's bucket, or
present but off when only routes have local limits; a route with its own local limit carries a
per-route config, which replaces the service's bucket for the requests it matches. A limit keyed
by a header gives each value its own bucket (a wildcard descriptor: Envoy makes buckets as values
arrive, keeping the `MAX_KEYS` most recently used); requests without the header share the
default bucket. A request finding its bucket empty gets 429 (gRPC: RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as route_pb2
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2 as lrl
from envoy.type.v3 import percent_pb2, token_bucket_pb2
from google.protobuf import wrappers_pb2

from meshpilot.model import ir, names
from meshpilot.translator.envoy.common import duration
from meshpilot.translator.envoy.filter_plugin import INBOUND, FilterContext, HttpFilter

MAX_KEYS = 10_000  # buckets of a keyed limit per sidecar; the least recently used one goes
_ALWAYS = base_pb2.RuntimeFractionalPercent(
    default_value=percent_pb2.FractionalPercent(
        numerator=100, denominator=percent_pb2.FractionalPercent.DenominatorType.Value("HUNDRED")
    )
)


def token_bucket(limit: ir.RateLimit) -> token_bucket_pb2.TokenBucket:
    """`burst` tokens at most, refilled with `requests` every interval; one token per request."""
    return token_bucket_pb2.TokenBucket(
        max_tokens=limit.burst,
        tokens_per_fill=wrappers_pb2.UInt32Value(value=limit.requests),
        fill_interval=duration(limit.interval_ms),
    )


def header_action(header: str) -> route_pb2.RateLimit.Action:
    """The descriptor entry (header name, its value); no entry when the header is absent."""
    return route_pb2.RateLimit.Action(
        request_headers=route_pb2.RateLimit.Action.RequestHeaders(
            header_name=header, descriptor_key=header, skip_if_absent=True
        )
    )


def _keyed(config: lrl.LocalRateLimit, limit: ir.RateLimit, header: str) -> None:
    """A bucket per value of `header`, each as big as the limit."""
    config.rate_limits.append(route_pb2.RateLimit(actions=[header_action(header)]))
    entry = ratelimit_pb2.RateLimitDescriptor.Entry(key=header, value="")  # "": any value
    config.descriptors.append(
        ratelimit_pb2.LocalRateLimitDescriptor(entries=[entry], token_bucket=token_bucket(limit))
    )
    config.always_consume_default_token_bucket.value = False
    config.max_dynamic_descriptors.value = MAX_KEYS


def local_rate_limit(
    limit: ir.RateLimit | None, stat_prefix: str, grpc: bool = False
) -> lrl.LocalRateLimit:
    """The filter's config: an enforced bucket with x-ratelimit-* response headers, or, with
    no limit, a filter that is present but off (for a service whose routes have their limits).
    """
    config = lrl.LocalRateLimit(stat_prefix=stat_prefix)
    if limit is None:
        return config
    config.token_bucket.CopyFrom(token_bucket(limit))
    config.filter_enabled.CopyFrom(_ALWAYS)
    config.filter_enforced.CopyFrom(_ALWAYS)
    config.enable_x_ratelimit_headers = ratelimit_pb2.XRateLimitHeadersRFCVersion.Value(
        "DRAFT_VERSION_03"
    )
    config.rate_limited_as_resource_exhausted = grpc
    if limit.key_header is not None:
        _keyed(config, limit, limit.key_header)
    return config


def _config(context: FilterContext) -> lrl.LocalRateLimit | None:
    service = context.service
    if service is None or not service.limits("local"):
        return None
    own = service.limits("local").get(None)
    return local_rate_limit(own, names.rate_limit_stat_prefix(), service.protocol == "grpc")


def _per_route(service: ir.Service, route: ir.Route) -> lrl.LocalRateLimit | None:
    """A route's own bucket, which replaces the service's for the requests it matches."""
    if route.rate_limit is None or route.rate_limit.scope != "local":
        return None
    prefix = names.rate_limit_stat_prefix(route.name)
    return local_rate_limit(route.rate_limit, prefix, service.protocol == "grpc")


FILTER = HttpFilter("envoy.filters.http.local_ratelimit", INBOUND, _config, per_route=_per_route)
