"""Rules that relate parts of the mesh: routes to subsets, policies and egress to services,
ports and host names shared between services, files named by the mesh.

They read the raw (YAML-constructed) data rather than a MeshSpec so that they still run when some
other part of the file is ill-typed: every problem is reported in one go, not the type errors
first and these on the next attempt.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from meshpilot.identity.errors import InvalidSpiffeId
from meshpilot.identity.spiffe import trust_domain_for_mesh
from meshpilot.mesh.diagnostics import Issue, Loc, suggest
from meshpilot.mesh.jwks import jwks_problem
from meshpilot.model import names
from meshpilot.netaddr import is_ip


def cross_checks(data: object, base_dir: Path | None = None) -> list[Issue]:
    """Problems that no single field can see: weights, subset names, duplicate names, policies
    naming services that do not exist, hook and CA files that are not there (relative to
    `base_dir`), a mesh name that gives no trust domain."""
    issues: list[Issue] = []
    for name, service in _items(_get(data, "services")):
        issues += _service_checks(("services", name), service)
    services = [name for name, _ in _items(_get(data, "services"))]
    gateways = [name for name, _ in _items(_get(data, "gateways"))]
    issues += _policy_checks(_get(data, "policies"), services, base_dir, gateways)
    issues += _token_policy_checks(_get(data, "policies"), _get(data, "services"))
    issues += _gateway_checks(_get(data, "gateways"), _get(data, "services"), base_dir)
    issues += _egress_checks(_get(data, "services"), services)
    issues += _tcp_port_checks(_get(data, "services"))
    issues += _outbound_port_checks(_get(data, "services"))
    issues += _host_name_checks(_get(data, "services"))
    issues += _file_checks(_get(data, "services"), base_dir)
    issues += _authentication_checks(_get(data, "services"), base_dir)
    issues += _security_checks(data, base_dir)
    issues += _global_limit_checks(data)
    issues += _local_answer_checks(_get(data, "services"))
    issues += _locality_failover_checks(_get(data, "services"))
    issues += _grpc_fault_checks(_get(data, "services"))
    issues += _caller_checks(_get(data, "services"))
    return issues


def _caller_checks(services: object) -> Iterator[Issue]:
    """A route's caller (`match.from`) is a service of the mesh; and such a route has no rate
    limit of its own, which the destination counts without knowing the caller's labels."""
    known = [name for name, _ in _items(services)]
    for name, service in _items(services):
        for i, route in _entries(_get(service, "routes")):
            caller = _get(_get(route, "match"), "from")
            if caller is None:
                continue
            loc: Loc = ("services", name, "routes", i)
            source = _get(caller, "service")
            if isinstance(source, str) and source not in known:
                yield Issue((*loc, "match", "from", "service"), _unknown_service(source, known))
            if _get(route, "rate_limit") is not None:
                yield Issue(
                    (*loc, "rate_limit"),
                    "a route's own rate limit is counted at the destination, which cannot tell "
                    "which callers 'match.from' names; limit the service instead",
                    at_key=True,
                )


def _grpc_fault_checks(services: object) -> Iterator[Issue]:
    """A gRPC status is an answer only a gRPC client understands (HTTP/2, in trailers)."""
    for name, service in _items(services):
        protocol = _get(service, "protocol", "http")
        if protocol in ("grpc", "http2"):
            continue
        for i, route in _entries(_get(service, "routes")):
            if _get(_get(_get(route, "fault"), "abort"), "grpc_status") is not None:
                yield Issue(
                    ("services", name, "routes", i, "fault", "abort", "grpc_status"),
                    f"a gRPC status answers gRPC calls, and this service's protocol is "
                    f"{protocol}; use 'status' or set 'protocol: grpc'",
                    at_key=True,
                )


# What a route does with a request it forwards: nothing of it happens on a route whose requests
# the caller's sidecar answers itself.
_LOCAL_ANSWERS = ("redirect", "direct_response")
_FORWARDING_KEYS = ("to", "timeout", "retries", "fault", "mirror", "rewrite", "rate_limit")


def _local_answer_checks(services: object) -> Iterator[Issue]:
    """A `redirect` or `direct_response` (one of them) is the caller's sidecar's answer: the
    route forwards nothing, so settings of forwarding would silently do nothing."""
    for name, service in _items(services):
        for i, route in _entries(_get(service, "routes")):
            answers = [key for key in _LOCAL_ANSWERS if _get(route, key) is not None]
            if not answers:
                continue
            loc = ("services", name, "routes", i)
            if len(answers) > 1:
                yield Issue(
                    (*loc, answers[1]),
                    "give 'redirect' or 'direct_response', not both",
                    at_key=True,
                )
            given = [key for key in _FORWARDING_KEYS if _get(route, key) is not None]
            if _get(_get(route, "headers"), "request") is not None:
                given.append("headers.request")
            for key in given:
                yield Issue(
                    (*loc, *key.split(".")),
                    f"a route with '{answers[0]}' is answered by the caller's sidecar and "
                    f"forwards nothing, so '{key}' would do nothing; remove it",
                    at_key=True,
                )


def _locality_failover_checks(services: object) -> Iterator[Issue]:
    """Failover between localities needs outlier detection where it applies (the service's,
    or for a subset its own or the service's): without it Envoy never sees the nearest
    members fail, and would never fail over (Istio applies no failover then)."""
    for name, service in _items(services):
        loc: Loc = ("services", name)
        detected = _get(service, "outlier_detection") is not None
        yield from _failover_needs_detection(loc, service, detected, "on the service")
        for subset, policy in _items(_get(service, "subset_policies")):
            own = detected or _get(policy, "outlier_detection") is not None
            where = "on the subset or its service"
            yield from _failover_needs_detection(
                (*loc, "subset_policies", subset), policy, own, where
            )


def _failover_needs_detection(
    loc: Loc, policy: object, detected: bool, where: str
) -> Iterator[Issue]:
    failover = _get(_get(_get(policy, "load_balancer"), "locality"), "failover")
    if failover and not detected:
        yield Issue(
            (*loc, "load_balancer", "locality", "failover"),
            f"locality failover needs 'outlier_detection' {where}: without it no member is "
            "ever found unhealthy, so traffic would never fail over",
            at_key=True,
        )


def _global_limit_checks(data: object) -> Iterator[Issue]:
    """Global limits are counted by the mixers in Redis, which the mesh must name, in fixed
    windows, which have no burst."""
    has_redis = _get(_get(data, "mixer"), "redis") is not None
    for name, service in _items(_get(data, "services")):
        owners: list[tuple[Loc, object]] = [(("services", name), service)]
        routes = _entries(_get(service, "routes"))
        owners += [(("services", name, "routes", i), route) for i, route in routes]
        for loc, owner in owners:
            limit = _get(owner, "rate_limit")
            if _get(limit, "scope") != "global":
                continue
            if not has_redis:
                yield Issue(
                    (*loc, "rate_limit", "scope"),
                    "a global rate limit is counted by the mixer in Redis: "
                    "set 'mixer.redis: HOST:PORT'",
                )
            if _get(limit, "burst") is not None:
                yield Issue(
                    (*loc, "rate_limit", "burst"),
                    "a global limit counts requests in fixed windows and has no burst; "
                    "'rate' alone says how many each window allows",
                    at_key=True,
                )


def _security_checks(data: object, base_dir: Path | None) -> Iterator[Issue]:
    """The CA files must be there, and without `trust_domain` the mesh name must give one."""
    security = _get(data, "security")
    mesh = _get(data, "mesh")
    if isinstance(mesh, str) and mesh and _get(security, "trust_domain") is None:
        try:
            trust_domain_for_mesh(mesh)
        except InvalidSpiffeId:
            yield Issue(
                ("mesh",),
                f"no SPIFFE trust domain can be made from mesh name '{mesh}'; "
                "set 'security.trust_domain'",
            )
    if base_dir is None:
        return
    for key, path in _items(_get(security, "ca")):
        if isinstance(path, str) and path and not (base_dir / path).is_file():
            yield Issue(("security", "ca", key), f"'{base_dir / path}' does not exist")


def _host_name_checks(services: object) -> Iterator[Issue]:
    """An external service answers to its endpoints' DNS names: every host name must name one
    service only, or the shared route table would have one domain twice."""
    owner = {name: name for name, _ in _items(services)}
    for name, service in _items(services):
        for i, endpoint in _entries(_get(service, "endpoints")):
            address = _get(endpoint, "address")
            if not isinstance(address, str) or is_ip(address):
                continue
            other = owner.setdefault(address, name)
            if other != name:
                yield Issue(
                    ("services", name, "endpoints", i, "address"),
                    f"'{address}' already names service '{other}'; a host name can reach one "
                    "service only",
                )


def _file_checks(services: object, base_dir: Path | None) -> Iterator[Issue]:
    """Envoy rejects a cluster whose CA file is missing, for every proxy: check it here."""
    if base_dir is None:
        return
    for name, service in _items(services):
        ca_file = _get(_get(service, "tls"), "ca_file")
        if isinstance(ca_file, str) and not (base_dir / ca_file).is_file():
            yield Issue(
                ("services", name, "tls", "ca_file"), f"'{base_dir / ca_file}' does not exist"
            )


def _authentication_checks(services: object, base_dir: Path | None) -> Iterator[Issue]:
    """JWT rules of a service: HTTP only, one per issuer, each with a usable JWKS file."""
    for name, service in _items(services):
        loc: Loc = ("services", name, "request_authentication")
        rules = list(_entries(_get(_get(service, "request_authentication"), "jwt")))
        if rules and _get(service, "protocol") == "tcp":
            yield Issue(loc, "request authentication applies to HTTP, not tcp", at_key=True)
        issuers: dict[object, int] = {}
        for i, rule in rules:
            issuer = _get(rule, "issuer")
            if isinstance(issuer, str) and issuer in issuers:
                yield Issue(
                    (*loc, "jwt", i, "issuer"),
                    f"issuer '{issuer}' is already verified by jwt[{issuers[issuer]}]",
                )
            issuers.setdefault(issuer, i)
            jwks_file = _get(rule, "jwks_file")
            if base_dir is not None and isinstance(jwks_file, str) and jwks_file:
                problem = jwks_problem(base_dir / jwks_file)
                if problem is not None:
                    yield Issue((*loc, "jwt", i, "jwks_file"), problem)


def _token_policy_checks(policies: object, services: object) -> Iterator[Issue]:
    """`request_principals` and `claims` need tokens that the policy's service verifies, and a
    principal names one of its issuers."""
    for i, policy in _entries(policies):
        target = _get(policy, "service")
        rules = _get(
            _get(
                _get(services, target) if isinstance(target, str) else None,
                "request_authentication",
            ),
            "jwt",
        )
        given = (_get(rule, "issuer") for _, rule in _entries(rules))
        issuers = list(dict.fromkeys(i for i in given if isinstance(i, str) and i))
        for key in ("request_principals", "claims"):
            if _get(policy, key) is not None and not issuers:
                yield Issue(
                    ("policies", i, key),
                    f"service '{target}' verifies no tokens: give it "
                    "'request_authentication' to match on them",
                    at_key=True,
                )
        if not issuers:
            continue
        for j, principal in _entries(_get(policy, "request_principals")):
            issuer = principal.rpartition("/")[0] if isinstance(principal, str) else None
            if issuer and issuer not in issuers:
                yield Issue(
                    ("policies", i, "request_principals", j),
                    f"issuer '{issuer}' is not one that service '{target}' verifies "
                    f"({', '.join(issuers)})",
                )


def _egress_checks(services: object, names: list[str]) -> Iterator[Issue]:
    known = set(names)
    for name, service in _items(services):
        for i, callee in _entries(_get(service, "egress")):
            if isinstance(callee, str) and callee not in known:
                yield Issue(("services", name, "egress", i), _unknown_service(callee, names))


def _tcp_port_checks(services: object) -> Iterator[Issue]:
    """Each tcp service is a listener on every caller's IP at its port: ports must differ."""
    owner: dict[object, str] = {}
    for name, service in _items(services):
        if _get(service, "protocol") != "tcp":
            continue
        port = _get(service, "port")
        if port in owner:
            yield Issue(
                ("services", name, "port"),
                f"tcp service '{owner[port]}' already uses port {port}; each tcp service "
                "needs a port of its own (callers listen on it)",
            )
        else:
            owner[port] = name


def _outbound_port_checks(services: object) -> Iterator[Issue]:
    """Each caller's sidecar listens at a service's `outbound_port` on its app's IP: the port
    must not be a sidecar's, a tcp service's, another such service's or an app's under `run:`."""
    owners: dict[object, str] = {
        _get(service, "port"): f"tcp service '{name}'"
        for name, service in _items(services)
        if _get(service, "protocol") == "tcp"
    }
    for name, service in _items(services):
        for i, run in _entries(_get(service, "run")):
            owners.setdefault(_get(run, "app_port", 8080), f"the app of services.{name}.run[{i}]")
    for name, service in _items(services):
        port = _outbound_port(service)
        if port is None:
            continue
        loc: Loc = ("services", name, "outbound_port")
        if _get(service, "protocol") == "tcp":
            yield Issue(
                loc,
                "a tcp service is reached at its port already; 'outbound_port' "
                "is for HTTP services",
            )
        elif port in RESERVED_PORTS:
            yield Issue(
                loc,
                f"port {port} is used by every sidecar "
                f"({', '.join(map(str, RESERVED_PORTS))}); choose another port",
            )
        elif port in owners:
            yield Issue(
                loc,
                f"port {port} is taken by {owners[port]}; every caller listens on "
                "it, so choose another port (e.g. 'outbound_port: 19080')",
            )
        else:
            owners[port] = f"service '{name}' (its outbound_port)"


def _outbound_port(service: object) -> object:
    """The port `outbound_port` stands for: the service's own for `true` (None: not set)."""
    value = _get(service, "outbound_port")
    if value is True:
        return _get(service, "port")
    return None if value is False else value


def _gateway_checks(gateways: object, declared: object, base_dir: Path | None) -> Iterator[Issue]:
    """A gateway is a source of the mesh by its name (no service's), sends to HTTP services
    that exist, listens where no other gateway does and has its certificate files."""
    services = [name for name, _ in _items(declared)]
    listening: dict[object, str] = {}
    for name, gateway in _items(gateways):
        loc: Loc = ("gateways", name)
        if name in services:
            yield Issue(
                loc,
                f"'{name}' names a service too; a gateway's name is its own "
                "identity (a policy's source), so choose another",
                at_key=True,
            )
        listen = _get(gateway, "listen")
        if isinstance(listen, str) and listen.rpartition(":")[2] in map(str, RESERVED_PORTS):
            yield Issue(
                (*loc, "listen"),
                f"'{listen}': ports {', '.join(map(str, RESERVED_PORTS))}"
                " are the proxies' own; choose another port",
            )
        elif listen in listening:
            yield Issue(
                (*loc, "listen"), f"gateway '{listening[listen]}' already listens at '{listen}'"
            )
        elif listen is not None:
            listening[listen] = name
        for host, target in _items(_get(gateway, "hosts")):
            if isinstance(target, str):
                yield from _gateway_target((*loc, "hosts", host), target, declared)
            for i, route in _entries(target):
                service = _get(route, "service")
                if isinstance(service, str):
                    yield from _gateway_target(
                        (*loc, "hosts", host, i, "service"), service, declared
                    )
        if base_dir is None:
            continue
        for key, path in _items(_get(gateway, "tls")):
            if isinstance(path, str) and path and not (base_dir / path).is_file():
                yield Issue((*loc, "tls", key), f"'{base_dir / path}' does not exist")


def _gateway_target(loc: Loc, service: str, declared: object) -> Iterator[Issue]:
    services = [name for name, _ in _items(declared)]
    if service not in services:
        yield Issue(loc, _unknown_service(service, services))
    elif _get(_get(declared, service), "protocol") == "tcp":
        yield Issue(loc, f"'{service}' is a tcp service; a gateway routes HTTP requests")


def _policy_checks(
    policies: object, services: list[str], base_dir: Path | None, gateways: list[str]
) -> Iterator[Issue]:
    """Sources (`from:`) are services or gateways."""
    seen: dict[str, int] = {}
    known = set(services)
    sources = [*services, *gateways]
    for i, policy in _entries(policies):
        loc: Loc = ("policies", i)
        name = _get(policy, "name")
        if isinstance(name, str) and name in seen:
            yield Issue(
                (*loc, "name"), f"duplicate policy name '{name}' (also policies[{seen[name]}])"
            )
        elif isinstance(name, str):
            seen[name] = i
        target = _get(policy, "service")
        if isinstance(target, str) and target not in known:
            yield Issue((*loc, "service"), _unknown_service(target, services))
        for j, source in _entries(_get(policy, "from")):
            if isinstance(source, str) and source not in sources:
                yield Issue((*loc, "from", j), _unknown_service(source, sources))
        hook = _get(policy, "hook")
        if isinstance(hook, str) and base_dir is not None and ":" in hook:
            file = base_dir / hook.rpartition(":")[0]
            if not file.is_file():
                yield Issue((*loc, "hook"), f"hook file '{file}' does not exist")


def _unknown_service(name: str, services: list[str]) -> str:
    close = suggest(name, services)
    hint = f"; did you mean '{close}'?" if close else ""
    return f"unknown service '{name}'{hint}"


def _service_checks(loc: Loc, service: object) -> Iterator[Issue]:
    subsets = _get(service, "subsets", {})
    known = list(subsets) if isinstance(subsets, dict) else None
    for subset, _ in _items(_get(service, "subset_policies")):
        if known is not None and subset not in known:
            yield Issue(
                (*loc, "subset_policies", subset), _unknown_subset(subset, known), at_key=True
            )
    if _get(service, "protocol") == "tcp":
        yield from _tcp_checks(loc, service)
    yield from _route_name_checks(loc, _get(service, "routes"))
    for i, route in _entries(_get(service, "routes")):
        yield from _to_checks((*loc, "routes", i, "to"), _get(route, "to"), known)
        mirror = _get(_get(route, "mirror"), "subset")
        if isinstance(mirror, str) and known is not None and mirror not in known:
            yield Issue((*loc, "routes", i, "mirror", "subset"), _unknown_subset(mirror, known))
        yield from _header_checks((*loc, "routes", i, "match", "headers"), route)
        for name, rule in _items(_get(_get(route, "match"), "query")):
            if _get(rule, "present") is False:
                yield Issue(
                    (*loc, "routes", i, "match", "query", name, "present"),
                    "Envoy cannot match an absent query parameter; only 'present: true'",
                )


# Ports a sidecar already uses on every instance IP; a TCP service's outbound listener would clash.
RESERVED_PORTS = (15000, 15001, 15006)
_HTTP_ONLY_ROUTE_KEYS = (
    "match",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "headers",
    "rewrite",
    "redirect",
    "direct_response",
)


def _tcp_checks(loc: Loc, service: object) -> Iterator[Issue]:
    """A TCP service has one listener per caller: one route at most, and only a split."""
    port = _get(service, "port")
    if port in RESERVED_PORTS:
        yield Issue(
            (*loc, "port"),
            f"port {port} is used by every sidecar ({', '.join(map(str, RESERVED_PORTS))}); "
            "a tcp service needs another port",
        )
    if _get(service, "rate_limit") is not None:
        yield Issue(
            (*loc, "rate_limit"), "rate limits apply to HTTP requests, not tcp", at_key=True
        )
    routes = list(_entries(_get(service, "routes")))
    if len(routes) > 1:
        yield Issue((*loc, "routes", 1), "a tcp service has at most one route (a weighted split)")
    for i, route in routes:
        for key in (*_HTTP_ONLY_ROUTE_KEYS, "rate_limit"):
            if _get(route, key) is not None:
                yield Issue(
                    (*loc, "routes", i, key), f"'{key}' applies to HTTP, not tcp", at_key=True
                )
    yield from _http_connection_checks(loc, service)


def _http_connection_checks(loc: Loc, service: object) -> Iterator[Issue]:
    """Settings of HTTP connections (Envoy's HttpProtocolOptions), which a tcp proxy ignores."""
    policies = [(loc, service)]
    policies += [
        ((*loc, "subset_policies", n), p) for n, p in _items(_get(service, "subset_policies"))
    ]
    for where, policy in policies:
        if _get(policy, "idle_timeout") is not None:
            yield Issue(
                (*where, "idle_timeout"), "'idle_timeout' applies to HTTP, not tcp", at_key=True
            )
        breaker = (*where, "circuit_breaker", "max_requests_per_connection")
        if _get(_get(policy, "circuit_breaker"), "max_requests_per_connection") is not None:
            yield Issue(
                breaker, "'max_requests_per_connection' applies to HTTP, not tcp", at_key=True
            )


def _to_checks(loc: Loc, to: object, subsets: list[str] | None) -> Iterator[Issue]:
    entries = list(_entries(to))
    for i, entry in entries:
        subset = _get(entry, "subset")
        if isinstance(subset, str) and subsets is not None and subset not in subsets:
            yield Issue((*loc, i, "subset"), _unknown_subset(subset, subsets))
    yield from _weight_checks(loc, entries)


def _weight_checks(loc: Loc, entries: list[tuple[int, object]]) -> Iterator[Issue]:
    """One entry without a weight takes it all; otherwise every entry has one, summing to 100."""
    if len(entries) > 1:
        for i, entry in entries:
            if isinstance(entry, dict) and entry.get("weight") is None:
                yield Issue(
                    (*loc, i),
                    f"this entry needs a 'weight': 'to' has {len(entries)} entries, "
                    "so each one needs a weight",
                )
    weights = [_get(entry, "weight") for _, entry in entries]
    ints = [w for w in weights if isinstance(w, int) and not isinstance(w, bool)]
    if weights and len(ints) == len(weights) and sum(ints) != 100:
        yield Issue(loc, f"weights add up to {sum(ints)}; they must add up to 100")


def _unknown_subset(subset: str, subsets: list[str]) -> str:
    if not subsets:
        return f"unknown subset '{subset}': this service defines no subsets"
    close = suggest(subset, subsets)
    hint = f"did you mean '{close}'?" if close else f"known subsets: {', '.join(subsets)}"
    return f"unknown subset '{subset}' in this service; {hint}"


def _header_checks(loc: Loc, route: object) -> Iterator[Issue]:
    """Header names are case-insensitive, so `X-User` and `x-user` would be the same match."""
    first: dict[str, str] = {}
    for name, _ in _items(_get(_get(route, "match"), "headers")):
        if name.lower() in first:
            other = first[name.lower()]
            yield Issue(
                (*loc, name),
                f"header '{name}' is the same as '{other}': header names ignore case",
                at_key=True,
            )
        else:
            first[name.lower()] = name


def _route_name_checks(loc: Loc, routes: object) -> Iterator[Issue]:
    """Route names are unique in their service, a route without one included (`route-INDEX`)."""
    explicit: dict[str, int] = {}
    for i, route in _entries(routes):
        name = _get(route, "name")
        if isinstance(name, str) and name in explicit:
            yield Issue(
                (*loc, "routes", i, "name"),
                f"duplicate route name '{name}' (also used by routes[{explicit[name]}])",
            )
        elif isinstance(name, str):
            explicit[name] = i
    for i, route in _entries(routes):
        derived = names.unnamed_route(i)
        if isinstance(route, dict) and _get(route, "name") is None and derived in explicit:
            yield Issue(
                (*loc, "routes", i),
                f"this route has no name, and the one it would get, '{derived}', is taken by "
                f"routes[{explicit[derived]}]; give it a name",
            )


def _get(data: object, key: str, default: object = None) -> object:
    return data.get(key, default) if isinstance(data, dict) else default


def _items(data: object) -> Iterator[tuple[str, object]]:
    if isinstance(data, dict):
        yield from ((k, v) for k, v in data.items() if isinstance(k, str))


def _entries(data: object) -> Iterator[tuple[int, object]]:
    if isinstance(data, list):
        yield from enumerate(data)
