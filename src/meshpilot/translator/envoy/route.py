"""Route builders: matches, actions, virtual hosts, route tables and the scopes that pick them.

Everything a route does to a request is configured on the route itself: matching, the cluster
choice (or a redirect or direct response instead), timeout, retries, mirroring, consistent-hash
keys, header edits, the path and Host rewrites, and what HTTP filters configure per route
(`per_filter`, given by the caller from the filters' order table: fault injection, see `fault`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import scoped_route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, wrappers_pb2

from meshpilot.model import ir, names
from meshpilot.model.match import ignoring_case
from meshpilot.translator.envoy.common import duration, typed
from meshpilot.translator.envoy.wire import length_delimited, string_field

ClusterNamer = Callable[[str | None], str]
# A route's `typed_per_filter_config`: what HTTP filters configure on it (see http_filters).
PerRoute = Callable[[ir.Service, ir.Route], Mapping[str, any_pb2.Any]]


def no_per_route(service: ir.Service, route: ir.Route) -> Mapping[str, any_pb2.Any]:
    return {}


_ROUTE_CONFIG_NAME_FIELD = 1
_ROUTE_CONFIG_VHOSTS_FIELD = 2
_MILLION = percent_pb2.FractionalPercent.DenominatorType.Value("MILLION")
_APPEND = base_pb2.HeaderValueOption.HeaderAppendAction.Value("APPEND_IF_EXISTS_OR_ADD")
_OVERWRITE = base_pb2.HeaderValueOption.HeaderAppendAction.Value("OVERWRITE_IF_EXISTS_OR_ADD")
_HashPolicy = rc.RouteAction.HashPolicy


def fractional_percent(percent: float) -> percent_pb2.FractionalPercent:
    """A percentage in millionths, so that shares such as 0.01 % or 33.3333 % stay exact."""
    return percent_pb2.FractionalPercent(numerator=round(percent * 10_000), denominator=_MILLION)


def string_matcher(match: ir.ValueMatch) -> string_pb2.StringMatcher:
    if match.kind == "regex":
        regex = ignoring_case(match.value) if match.ignore_case else match.value
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))
    if match.kind == "prefix":
        return string_pb2.StringMatcher(prefix=match.value, ignore_case=match.ignore_case)
    return string_pb2.StringMatcher(exact=match.value, ignore_case=match.ignore_case)


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
    if match.ignore_case:
        ignore_path_case(result)
    return result


def ignore_path_case(match: rc.RouteMatch) -> None:
    """Envoy's `case_sensitive` covers the prefix and exact path; a regex gets RE2's flag."""
    if match.HasField("safe_regex"):
        match.safe_regex.regex = ignoring_case(match.safe_regex.regex)
    else:
        match.case_sensitive.value = False


# Packed once: every retry policy carries the same predicate, and packing costs ~30 us a time.
_PREVIOUS_HOSTS = typed(previous_hosts_pb2.PreviousHostsPredicate())


def retry_policy(retries: ir.RetryPolicy) -> rc.RetryPolicy:
    """Retries that prefer a host not tried yet, as Istio does."""
    policy = rc.RetryPolicy(
        retry_on=",".join(retries.on),
        num_retries=wrappers_pb2.UInt32Value(value=retries.attempts),
        retriable_status_codes=retries.retriable_status_codes,
        host_selection_retry_max_attempts=3,
        retry_host_predicate=[
            rc.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=_PREVIOUS_HOSTS,
            )
        ],
    )
    if retries.per_try_timeout_ms is not None:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout_ms))
    if retries.backoff_base_ms is not None:
        policy.retry_back_off.CopyFrom(
            retry_back_off(retries.backoff_base_ms, retries.backoff_max_ms)
        )
    return policy


def retry_back_off(base_ms: int, max_ms: int | None) -> rc.RetryPolicy.RetryBackOff:
    """Jittered exponential back-off; Envoy caps it at ten times the base unless given a max."""
    back_off = rc.RetryPolicy.RetryBackOff(base_interval=duration(base_ms))
    if max_ms is not None:
        back_off.max_interval.CopyFrom(duration(max_ms))
    return back_off


def mirror_policy(
    mirror: ir.Mirror, cluster_of: ClusterNamer
) -> rc.RouteAction.RequestMirrorPolicy:
    """A fire-and-forget copy of a share of requests; Envoy appends `-shadow` to its Host."""
    return rc.RouteAction.RequestMirrorPolicy(
        cluster=cluster_of(mirror.subset),
        runtime_fraction=base_pb2.RuntimeFractionalPercent(
            default_value=fractional_percent(mirror.percent)
        ),
    )


def hash_policy(key: ir.HashKey) -> rc.RouteAction.HashPolicy:
    """What a ring_hash or maglev cluster hashes a request on."""
    if key.kind == "header":
        return _HashPolicy(header=_HashPolicy.Header(header_name=key.name))
    if key.kind == "query_parameter":
        return _HashPolicy(query_parameter=_HashPolicy.QueryParameter(name=key.name))
    if key.kind == "source_ip":
        return _HashPolicy(connection_properties=_HashPolicy.ConnectionProperties(source_ip=True))
    cookie = _HashPolicy.Cookie(name=key.name, path=key.path or "")
    if key.ttl_ms is not None:  # with a ttl, Envoy sets the cookie when the request has none
        cookie.ttl.CopyFrom(duration(key.ttl_ms))
    return _HashPolicy(cookie=cookie)


def cluster_hash_key(service: ir.Service, subset: str | None) -> ir.HashKey | None:
    """The hash key of a subset's cluster (its own policy), or of the whole service's."""
    policy = next((s.policy for s in service.subsets if s.name == subset), service.policy)
    return policy.load_balancer.hash


def route_hash_key(service: ir.Service, r: ir.Route) -> ir.HashKey | None:
    """The key the route's clusters hash on; when a split's clusters disagree, the service's."""
    keys = [cluster_hash_key(service, d.subset) for d in r.to if d.weight > 0]
    distinct = list(dict.fromkeys(k for k in keys if k is not None))
    if len(distinct) > 1 and service.policy.load_balancer.hash in distinct:
        return service.policy.load_balancer.hash
    return distinct[0] if distinct else None


def cluster_choice(to: Sequence[ir.Destination], cluster_of: ClusterNamer) -> rc.RouteAction:
    """An action naming one cluster, or a weighted split (shares of weight 0 left out)."""
    shares = [d for d in to if d.weight > 0]
    if len(shares) == 1:
        return rc.RouteAction(cluster=cluster_of(shares[0].subset))
    split = rc.WeightedCluster(
        clusters=[
            rc.WeightedCluster.ClusterWeight(
                name=cluster_of(d.subset), weight=wrappers_pb2.UInt32Value(value=d.weight)
            )
            for d in shares
        ]
    )
    return rc.RouteAction(weighted_clusters=split)


def route_action(
    route: ir.Route,
    cluster_of: ClusterNamer,
    hash_key: ir.HashKey | None = None,
    rewrite_host: bool = False,
) -> rc.RouteAction:
    """`rewrite_host`: the request reaches the member with the member's name as its Host."""
    action = cluster_choice(route.to, cluster_of)
    if route.timeout_ms is not None:
        action.timeout.CopyFrom(duration(route.timeout_ms))
    if route.retries is not None and route.retries.attempts > 0:
        action.retry_policy.CopyFrom(retry_policy(route.retries))
    if route.mirror is not None:
        action.request_mirror_policies.append(mirror_policy(route.mirror, cluster_of))
    if hash_key is not None:
        action.hash_policy.append(hash_policy(hash_key))
    if route.prefix_rewrite is not None:
        action.prefix_rewrite = route.prefix_rewrite
    if rewrite_host:
        action.auto_host_rewrite.value = True
    if route.regex_rewrite is not None:
        action.regex_rewrite.CopyFrom(regex_rewrite(route.regex_rewrite))
    if route.host_rewrite is not None:  # in place of auto_host_rewrite: Envoy takes one
        action.host_rewrite_literal = route.host_rewrite
    return action


def regex_rewrite(rewrite: ir.RegexRewrite) -> regex_pb2.RegexMatchAndSubstitute:
    return regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex=rewrite.pattern), substitution=rewrite.substitution
    )


_REDIRECT_CODES = {
    301: rc.RedirectAction.MOVED_PERMANENTLY,
    302: rc.RedirectAction.FOUND,
    303: rc.RedirectAction.SEE_OTHER,
    307: rc.RedirectAction.TEMPORARY_REDIRECT,
    308: rc.RedirectAction.PERMANENT_REDIRECT,
}


def redirect_action(redirect: ir.Redirect) -> rc.RedirectAction:
    """The parts left out keep the request's own (its scheme, Host, port, path and query)."""
    action = rc.RedirectAction(
        response_code=_REDIRECT_CODES[redirect.code],
        host_redirect=redirect.host or "",
        port_redirect=redirect.port or 0,
    )
    if redirect.scheme is not None:  # one of a oneof: set only when given
        action.scheme_redirect = redirect.scheme
    if redirect.path is not None:
        action.path_redirect = redirect.path
    elif redirect.prefix is not None:
        action.prefix_rewrite = redirect.prefix
    return action


def direct_response_action(answer: ir.DirectResponse) -> rc.DirectResponseAction:
    action = rc.DirectResponseAction(status=answer.status)
    if answer.body is not None:
        action.body.inline_string = answer.body
    return action


def route_outcome(
    built: rc.Route,
    service: ir.Service,
    r: ir.Route,
    cluster_of: ClusterNamer,
    rewrite_host: bool,
) -> rc.Route:
    """`built` with what becomes of the requests it matches: a redirect or a direct response
    from the caller's sidecar, or forwarding to the route's clusters."""
    if r.redirect is not None:
        built.redirect.CopyFrom(redirect_action(r.redirect))
    elif r.direct_response is not None:
        built.direct_response.CopyFrom(direct_response_action(r.direct_response))
    else:
        built.route.CopyFrom(route_action(r, cluster_of, route_hash_key(service, r), rewrite_host))
    return built


def header_value_options(ops: ir.HeaderOps) -> list[base_pb2.HeaderValueOption]:
    """`add` appends to a header already there, `set` replaces it; both add a missing one."""
    edits = [(name, value, _APPEND) for name, value in ops.add]
    edits += [(name, value, _OVERWRITE) for name, value in ops.set]
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append_action=action
        )
        for name, value, action in edits
    ]


def route(
    service: ir.Service,
    r: ir.Route,
    cluster_of: ClusterNamer,
    per_filter: PerRoute = no_per_route,
    rewrite_host: bool = False,
) -> rc.Route:
    built = rc.Route(
        name=names.route(service.name, r.name),
        match=route_match(r.match),
        request_headers_to_add=header_value_options(r.request_headers),
        request_headers_to_remove=r.request_headers.remove,
        response_headers_to_add=header_value_options(r.response_headers),
        response_headers_to_remove=r.response_headers.remove,
        typed_per_filter_config=per_filter(service, r),
    )
    return route_outcome(built, service, r, cluster_of, rewrite_host)


def virtual_host(
    service: ir.Service,
    cluster_of: ClusterNamer,
    per_filter: PerRoute = no_per_route,
    external_names: Sequence[str] | None = None,
) -> rc.VirtualHost:
    """Reached by `Host: name` or `Host: name:port`; routes in file order, first match wins.

    An external service (`external_names`: its endpoints' names) also answers to those names,
    and requests reach each endpoint with its name as Host, as if the app had called it. A
    service with an `outbound_port` answers to any Host: its port listener has no other table
    (the outbound listener still picks the table by Host)."""
    rewrite_host = external_names is not None
    any_host = ["*"] if service.outbound_port is not None else []
    return rc.VirtualHost(
        name=names.virtual_host(service.name),
        domains=[
            service.name,
            f"{service.name}:{service.port}",
            *(external_names or ()),
            *any_host,
        ],
        routes=[route(service, r, cluster_of, per_filter, rewrite_host) for r in service.routes],
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

    A table is a concatenation of cached virtual hosts (a service's outbound table holds its
    own alone).
    """
    return string_field(_ROUTE_CONFIG_NAME_FIELD, name) + b"".join(virtual_host_entries)


def route_scope(
    name: str, host: str, route_configuration: str
) -> scoped_route_pb2.ScopedRouteConfiguration:
    """Requests whose Host is `host` (with or without a port) use table `route_configuration`."""
    key = scoped_route_pb2.ScopedRouteConfiguration.Key(
        fragments=[scoped_route_pb2.ScopedRouteConfiguration.Key.Fragment(string_key=host)]
    )
    return scoped_route_pb2.ScopedRouteConfiguration(
        name=name, route_configuration_name=route_configuration, key=key
    )
