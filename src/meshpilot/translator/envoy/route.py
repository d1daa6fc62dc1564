"""Route builders: matches, actions, virtual hosts and the outbound route table."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from meshpilot.translator import ir, names
from meshpilot.translator.envoy.common import duration, typed
from meshpilot.translator.envoy.wire import length_delimited, string_field

ClusterNamer = Callable[[str | None], str]

_ROUTE_CONFIG_NAME_FIELD = 1
_ROUTE_CONFIG_VHOSTS_FIELD = 2
_UNKNOWN_HOST_BODY = "meshpilot: no such service in the mesh\n"


def string_matcher(match: ir.ValueMatch) -> string_pb2.StringMatcher:
    if match.kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=match.value))
    if match.kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.value)
    return string_pb2.StringMatcher(exact=match.value)


def header_matcher(match: ir.ValueMatch) -> rc.HeaderMatcher:
    if match.kind in ("present", "absent"):
        return rc.HeaderMatcher(
            name=match.name, present_match=True, invert_match=match.kind == "absent"
        )
    return rc.HeaderMatcher(name=match.name, string_match=string_matcher(match))


def query_matcher(match: ir.ValueMatch) -> rc.QueryParameterMatcher:
    if match.kind == "present":
        return rc.QueryParameterMatcher(name=match.name, present_match=True)
    if match.kind == "absent":
        raise ValueError("Envoy cannot match an absent query parameter")
    return rc.QueryParameterMatcher(name=match.name, string_match=string_matcher(match))


def method_matcher(methods: Sequence[str]) -> rc.HeaderMatcher:
    if len(methods) == 1:
        return header_matcher(ir.ValueMatch(":method", "exact", methods[0]))
    regex = "^(" + "|".join(methods) + ")$"
    return header_matcher(ir.ValueMatch(":method", "regex", regex))


def route_match(match: ir.RouteMatch) -> rc.RouteMatch:
    result = rc.RouteMatch(
        headers=[header_matcher(h) for h in match.headers],
        query_parameters=[query_matcher(q) for q in match.query],
    )
    if match.path is not None:
        result.path = match.path
    elif match.path_regex is not None:
        result.safe_regex.regex = match.path_regex
    else:
        result.prefix = match.path_prefix or "/"
    if match.methods:
        result.headers.append(method_matcher(match.methods))
    return result


def retry_policy(retries: ir.RetryPolicy) -> rc.RetryPolicy:
    """Retries that prefer a host not tried yet, as Istio does."""
    policy = rc.RetryPolicy(
        retry_on=",".join(retries.on),
        num_retries=wrappers_pb2.UInt32Value(value=retries.attempts),
        host_selection_retry_max_attempts=3,
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=typed(previous_hosts_pb2.PreviousHostsPredicate()),
            )
        ],
    )
    if retries.per_try_timeout_ms is not None:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout_ms))
    return policy


def route_action(route: ir.Route, cluster_of: ClusterNamer) -> rc.RouteAction:
    action = rc.RouteAction()
    shares = [d for d in route.to if d.weight > 0]
    if len(shares) == 1:
        action.cluster = cluster_of(shares[0].subset)
    else:
        action.weighted_clusters.clusters.extend(
            rc.WeightedCluster.ClusterWeight(
                name=cluster_of(d.subset), weight=wrappers_pb2.UInt32Value(value=d.weight)
            )
            for d in shares
        )
    if route.timeout_ms is not None:
        action.timeout.CopyFrom(duration(route.timeout_ms))
    if route.retries is not None and route.retries.attempts > 0:
        action.retry_policy.CopyFrom(retry_policy(route.retries))
    return action


def route(service: ir.Service, r: ir.Route, cluster_of: ClusterNamer) -> rc.Route:
    return rc.Route(
        name=names.route(service.name, r.name),
        match=route_match(r.match),
        route=route_action(r, cluster_of),
    )


def virtual_host(service: ir.Service, cluster_of: ClusterNamer) -> rc.VirtualHost:
    """Reached by `Host: name` or `Host: name:port`; routes in file order, first match wins."""
    return rc.VirtualHost(
        name=names.virtual_host(service.name),
        domains=[service.name, f"{service.name}:{service.port}"],
        routes=[route(service, r, cluster_of) for r in service.routes],
    )


def unknown_host_virtual_host() -> rc.VirtualHost:
    """Catch-all: a request for a service the mesh does not know gets a 404 at once."""
    return rc.VirtualHost(
        name=names.UNKNOWN_HOST_VHOST,
        domains=["*"],
        routes=[
            rc.Route(
                match=rc.RouteMatch(prefix="/"),
                direct_response=rc.DirectResponseAction(
                    status=404,
                    body=base_pb2.DataSource(inline_string=_UNKNOWN_HOST_BODY),
                ),
            )
        ],
    )


def forward_all_virtual_host(name: str, cluster: str) -> rc.VirtualHost:
    """Every request to one cluster, with no timeout: the caller's sidecar enforces timeouts."""
    action = rc.RouteAction(cluster=cluster, timeout=duration(0))
    return rc.VirtualHost(
        name=name,
        domains=["*"],
        routes=[rc.Route(match=rc.RouteMatch(prefix="/"), route=action)],
    )


def virtual_host_entry(serialized: bytes) -> bytes:
    """A serialized virtual host encoded as one `virtual_hosts` field of a RouteConfiguration."""
    return length_delimited(_ROUTE_CONFIG_VHOSTS_FIELD, serialized)


def route_configuration_bytes(name: str, virtual_host_entries: Sequence[bytes]) -> bytes:
    """A serialized RouteConfiguration assembled from encoded virtual host entries.

    The outbound table holds one virtual host per service; editing one service re-serializes only
    that host, and the table is a concatenation of cached bytes.
    """
    return string_field(_ROUTE_CONFIG_NAME_FIELD, name) + b"".join(virtual_host_entries)
