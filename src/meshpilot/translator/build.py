"""MeshSpec -> MeshIR: apply defaults, read durations, sort, so that builders never have to.

Pure: the same spec always gives an equal IR. The spec is assumed valid (`mesh.load` checked it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from meshpilot.errors import MeshpilotError
from meshpilot.identity.spiffe import SpiffeId, trust_domain_for_mesh
from meshpilot.mesh.durations import parse_duration
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.schema import (
    DEFAULT_RETRY_ATTEMPTS,
    CallerSpec,
    CircuitBreakerSpec,
    CorsSpec,
    DefaultsSpec,
    DestinationSpec,
    DirectResponseSpec,
    EndpointSpec,
    FaultSpec,
    GatewaySpec,
    HashSpec,
    HeaderOpsSpec,
    JwtRuleSpec,
    LoadBalancerSpec,
    LocalityLbSpec,
    MatchSpec,
    MeshSpec,
    MirrorSpec,
    MixerSpec,
    OutlierDetectionSpec,
    PolicySpec,
    PolicyTargetSpec,
    RateLimitSpec,
    RedirectSpec,
    RequestAuthenticationSpec,
    RetriesSpec,
    RewriteSpec,
    RouteSpec,
    ServiceSpec,
    TcpKeepaliveSpec,
    TelemetrySpec,
    TlsSpec,
    TrafficPolicySpec,
    ValueMatchSpec,
)
from meshpilot.model import names
from meshpilot.model.ir import (
    Caller,
    CircuitBreaker,
    ClaimMatch,
    Collector,
    Cors,
    Destination,
    DirectResponse,
    Fault,
    Gateway,
    GatewayHost,
    GatewayRoute,
    HashKey,
    HeaderOps,
    JwtHeader,
    JwtProvider,
    LoadBalancer,
    MeshIR,
    Mirror,
    Mixer,
    OutlierDetection,
    Policy,
    PolicyTarget,
    RateLimit,
    Redirect,
    RegexRewrite,
    RequestPrincipal,
    RetryPolicy,
    Route,
    RouteMatch,
    Service,
    StaticEndpoint,
    Subset,
    TcpKeepalive,
    Telemetry,
    TrafficPolicy,
    UpstreamTls,
    ValueMatch,
    labels_of,
)
from meshpilot.model.locality import Distribute, Locality, LocalityLb

DEFAULT_ROUTE = "default"
WHOLE_SERVICE = (Destination(subset=None, weight=100),)


def load_ir(path: Path, *, secure: bool = True) -> MeshIR:
    """The IR of a mesh file; raises MeshInvalid with every problem if it is not valid."""
    return build_ir(load_mesh(path), path.parent, secure=secure)


ServiceBuilder = Callable[[str, ServiceSpec, DefaultsSpec, Path], Service]


def build_ir(
    spec: MeshSpec,
    base_dir: Path | None = None,
    *,
    secure: bool = True,
    service_of: ServiceBuilder | None = None,
) -> MeshIR:
    """Sorted by name throughout, so that equal files give equal IR and equal versions.

    Relative file names in the mesh (a CA file) are relative to `base_dir`, the mesh file's folder.
    `secure`: sidecars have workload certificates (a control plane not run with --insecure).
    `service_of`: how a service is built (`service`, or an `IrBuilder`'s memo of it).
    """
    defaults = spec.defaults or DefaultsSpec()
    base = base_dir or Path()
    build = service_of or service
    services = tuple(
        build(name, spec.services[name], defaults, base) for name in sorted(spec.services)
    )
    policies = tuple(policy(p, base) for p in spec.policies)
    telemetry = telemetry_of(spec.telemetry)
    needs_mixer = (
        telemetry.access_log
        or any(p.action == "custom" for p in policies)
        or any(s.limits("global") for s in services)
    )
    mesh = MeshIR(
        name=spec.mesh,
        services=services,
        policies=policies,
        mixer=mixer(spec.mixer) if spec.mixer is not None or needs_mixer else None,
        telemetry=telemetry,
        gateways=tuple(gateway(n, spec.gateways[n], base) for n in sorted(spec.gateways)),
    )
    return with_identity(mesh, spec) if secure else mesh


class IrBuilder:
    """`build_ir` for successive versions of one mesh file: a service whose spec is the very
    object it was last time (`MeshReader` keeps the specs of services whose text is unchanged),
    with the same defaults, is not built again; but for one that verifies tokens, whose JWKS
    files may have changed since (a reload reads them again)."""

    def __init__(self) -> None:
        self._built: dict[str, tuple[ServiceSpec, DefaultsSpec, Path, Service]] = {}

    def build(self, spec: MeshSpec, base_dir: Path, *, secure: bool) -> MeshIR:
        mesh = build_ir(spec, base_dir, secure=secure, service_of=self._service)
        self._built = {n: b for n, b in self._built.items() if n in spec.services}
        return mesh

    def _service(self, name: str, spec: ServiceSpec, defaults: DefaultsSpec, base: Path) -> Service:
        found = self._built.get(name)
        unchanged = found is not None and found[0] is spec and found[1:3] == (defaults, base)
        if found is not None and unchanged and spec.request_authentication is None:
            return found[3]
        built = service(name, spec, defaults, base)
        self._built[name] = (spec, defaults, base, built)
        return built


def with_identity(mesh: MeshIR, spec: MeshSpec) -> MeshIR:
    """The mesh with workload identity: every service's SPIFFE ID (but for services whose static
    endpoints have no sidecar to present one) and inbound mode, the mixer's identity."""
    trust_domain = spec.security.trust_domain or trust_domain_for_mesh(spec.mesh)
    services = []
    for entry in mesh.services:
        override = spec.services[entry.name].security
        mode = (override.mtls if override else None) or spec.security.mtls
        in_mesh = not entry.endpoints and entry.tls is None
        spiffe_id = SpiffeId(trust_domain, entry.name).uri if in_mesh else None
        services.append(dataclasses.replace(entry, spiffe_id=spiffe_id, mtls=mode))
    mixer_id = SpiffeId(trust_domain, names.MIXER_SERVICE).uri
    return dataclasses.replace(
        mesh,
        services=tuple(services),
        mixer=dataclasses.replace(mesh.mixer, spiffe_id=mixer_id) if mesh.mixer else None,
        trust_domain=trust_domain,
    )


def gateway(name: str, spec: GatewaySpec, base: Path) -> Gateway:
    """Hosts sorted by name (`*` first: Envoy matches exact names before it anyway); a host
    given as a service name sends every path there."""
    host_text, _, port = spec.listen.rpartition(":")
    hosts = []
    for host in sorted(spec.hosts):
        given = spec.hosts[host]
        if isinstance(given, str):
            routes: tuple[GatewayRoute, ...] = (GatewayRoute(given),)
        else:
            routes = tuple(GatewayRoute(r.service, r.path_prefix) for r in given)
        hosts.append(GatewayHost(host, routes))
    tls = None
    if spec.tls is not None:
        tls = (str((base / spec.tls.cert).resolve()), str((base / spec.tls.key).resolve()))
    address = host_text.removeprefix("[").removesuffix("]")
    return Gateway(name, address, int(port), tuple(hosts), tls)


def policy(spec: PolicySpec, base: Path) -> Policy:
    target = spec.to or PolicyTargetSpec()
    headers = sorted(value_match(name.lower(), v) for name, v in target.headers.items())
    return Policy(
        name=spec.name,
        service=spec.service,
        action=spec.action,
        sources=tuple(spec.from_) if spec.from_ is not None else None,
        target=PolicyTarget(tuple(target.methods), tuple(target.paths), tuple(headers)),
        hook=_absolute_hook(spec.hook, base) if spec.hook else None,
        principals=_principals(spec.request_principals),
        claims=tuple(ClaimMatch(n, tuple(spec.claims[n])) for n in sorted(spec.claims)),
    )


def _principals(given: list[str] | None) -> tuple[RequestPrincipal, ...] | None:
    """`ISS/SUB` split at its last `/`; `*` stands for any issuer or any subject."""
    if given is None:
        return None
    found = []
    for principal in given:
        issuer, _, subject = principal.rpartition("/")
        found.append(RequestPrincipal(issuer or None, None if subject == "*" else subject))
    return tuple(found)


def _absolute_hook(hook: str, base: Path) -> str:
    file, _, function = hook.rpartition(":")
    return f"{(base / file).resolve()}:{function}"


def mixer(spec: MixerSpec | None) -> Mixer:
    spec = spec or MixerSpec()
    timeout_ms = parse_duration(spec.timeout)
    return Mixer(spec.address, spec.failure_mode == "open", timeout_ms, redis=spec.redis)


def telemetry_of(spec: TelemetrySpec | None) -> Telemetry:
    if spec is None:
        return Telemetry()
    if spec.tracing is None:
        return Telemetry(spec.access_log)
    tracing = spec.tracing
    collector = Collector(tracing.collector, tracing.protocol) if tracing.collector else None
    return Telemetry(spec.access_log, float(tracing.sampling), collector)


def service(name: str, spec: ServiceSpec, defaults: DefaultsSpec, base: Path = Path()) -> Service:
    routes = [
        route(r, defaults, r.name or names.unnamed_route(i)) for i, r in enumerate(spec.routes)
    ] or [default_route(defaults)]
    routes = with_service_cors(routes, cors(spec.cors))
    policy = traffic_policy(spec)
    subsets = (
        Subset(n, labels_of(spec.subsets[n]), subset_policy(policy, spec.subset_policies.get(n)))
        for n in sorted(spec.subsets)
    )
    return Service(
        name=name,
        port=spec.port,
        protocol=spec.protocol,
        subsets=tuple(subsets),
        endpoints=tuple(static_endpoint(e) for e in spec.endpoints),
        routes=tuple(routes),
        policy=policy,
        tls=upstream_tls(spec.tls, base),
        rate_limit=rate_limit(spec.rate_limit),
        tracing_sampling=float(spec.tracing.sampling) if spec.tracing else None,
        egress=tuple(sorted(set(spec.egress))) if spec.egress is not None else None,
        outbound_port=outbound_port(spec),
        jwt=jwt_providers(spec.request_authentication, base),
    )


def jwt_providers(spec: RequestAuthenticationSpec | None, base: Path) -> tuple[JwtProvider, ...]:
    """Sorted by issuer; each with its JWKS file's text as it is now."""
    if spec is None:
        return ()
    return tuple(jwt_provider(rule, base) for rule in sorted(spec.jwt, key=lambda r: r.issuer))


def jwt_provider(spec: JwtRuleSpec, base: Path) -> JwtProvider:
    jwks_file = (base / spec.jwks_file).resolve()
    try:
        jwks = jwks_file.read_text()
    except (OSError, ValueError) as err:  # changed since it was validated
        raise MeshpilotError(f"cannot read the JWKS file '{jwks_file}': {err}") from None
    return JwtProvider(
        issuer=spec.issuer,
        jwks_file=str(jwks_file),
        jwks=jwks,
        audiences=tuple(spec.audiences),
        forward=spec.forward,
        from_headers=tuple(JwtHeader(h.name.lower(), h.prefix) for h in spec.from_headers),
        from_params=tuple(spec.from_params),
    )


def outbound_port(spec: ServiceSpec) -> int | None:
    """`outbound_port: true` is the service's own port; false or absent: none."""
    if spec.outbound_port is True:
        return spec.port
    return spec.outbound_port or None


def traffic_policy(spec: ServiceSpec | TrafficPolicySpec) -> TrafficPolicy:
    return TrafficPolicy(
        load_balancer=load_balancer(spec.load_balancer),
        circuit_breaker=circuit_breaker(spec.circuit_breaker),
        outlier_detection=outlier_detection(spec.outlier_detection),
        connect_timeout_ms=millis(spec.connect_timeout),
        idle_timeout_ms=millis(spec.idle_timeout),
        tcp_keepalive=tcp_keepalive(spec.tcp_keepalive),
    )


def subset_policy(service_policy: TrafficPolicy, spec: TrafficPolicySpec | None) -> TrafficPolicy:
    """The service's policy with the subset's own settings in place of the same keys."""
    if spec is None:
        return service_policy
    own = traffic_policy(spec)
    return TrafficPolicy(
        load_balancer=own.load_balancer if spec.load_balancer else service_policy.load_balancer,
        circuit_breaker=own.circuit_breaker or service_policy.circuit_breaker,
        outlier_detection=own.outlier_detection or service_policy.outlier_detection,
        connect_timeout_ms=own.connect_timeout_ms or service_policy.connect_timeout_ms,
        idle_timeout_ms=_first_set(own.idle_timeout_ms, service_policy.idle_timeout_ms),
        tcp_keepalive=own.tcp_keepalive or service_policy.tcp_keepalive,
    )


def _first_set(own: int | None, inherited: int | None) -> int | None:
    """`0s` is a setting of its own (no idle timeout), not a missing one."""
    return own if own is not None else inherited


def tcp_keepalive(spec: TcpKeepaliveSpec | None) -> TcpKeepalive | None:
    if spec is None:
        return None
    seconds = [None if d is None else parse_duration(d) // 1000 for d in (spec.time, spec.interval)]
    return TcpKeepalive(seconds[0], seconds[1], spec.probes)


def load_balancer(spec: str | LoadBalancerSpec | None) -> LoadBalancer:
    if spec is None:
        return LoadBalancer()
    if isinstance(spec, str):
        return LoadBalancer(spec)
    return LoadBalancer(
        spec.policy,
        hash_key(spec.hash) if spec.hash else None,
        millis(spec.warmup),
        locality_lb(spec.locality) if spec.locality else None,
    )


def locality_lb(spec: LocalityLbSpec) -> LocalityLb:
    return LocalityLb(
        spec.enabled,
        tuple((f.from_, f.to) for f in spec.failover),
        tuple(Distribute(d.from_, tuple(d.to.items())) for d in spec.distribute),
    )


def hash_key(spec: HashSpec) -> HashKey:
    if spec.header is not None:
        return HashKey("header", spec.header.lower())
    if spec.cookie is not None:
        return HashKey("cookie", spec.cookie.name, millis(spec.cookie.ttl), spec.cookie.path)
    if spec.query_parameter is not None:
        return HashKey("query_parameter", spec.query_parameter)
    return HashKey("source_ip")


def circuit_breaker(spec: CircuitBreakerSpec | None) -> CircuitBreaker | None:
    return None if spec is None else CircuitBreaker(**spec.model_dump())


def outlier_detection(spec: OutlierDetectionSpec | None) -> OutlierDetection | None:
    if spec is None:
        return None
    return OutlierDetection(
        consecutive_5xx=spec.consecutive_5xx,
        consecutive_gateway_errors=spec.consecutive_gateway_errors,
        interval_ms=millis(spec.interval),
        base_ejection_time_ms=millis(spec.base_ejection_time),
        max_ejection_percent=spec.max_ejection_percent,
        min_health_percent=_percent(spec.min_health_percent),
    )


def _percent(value: float | None) -> float | None:
    return None if value is None else float(value)


def upstream_tls(spec: TlsSpec | None, base: Path) -> UpstreamTls | None:
    if spec is None:
        return None
    ca_file = str((base / spec.ca_file).resolve()) if spec.ca_file else None
    return UpstreamTls(spec.sni, ca_file, spec.verify)


def rate_limit(spec: RateLimitSpec | None) -> RateLimit | None:
    if spec is None:
        return None
    requests, interval_ms = spec.requests_and_interval()
    key = spec.key.header.lower() if spec.key else None
    return RateLimit(requests, interval_ms, spec.burst or requests, key, spec.scope)


def static_endpoint(spec: EndpointSpec) -> StaticEndpoint:
    return StaticEndpoint(
        address=spec.address,
        port=spec.port,
        labels=labels_of(spec.labels),
        locality=Locality.parse(spec.locality) if spec.locality else None,
    )


def route(spec: RouteSpec, defaults: DefaultsSpec, name: str) -> Route:
    """A route's own timeout and retries replace the defaults whole; they are not merged."""
    built = Route(
        name=name,
        match=route_match(spec.match),
        to=destinations(spec.to),
        timeout_ms=millis(spec.timeout if spec.timeout is not None else defaults.timeout),
        retries=retry_policy(spec.retries if spec.retries is not None else defaults.retries),
        fault=fault(spec.fault),
        mirror=mirror(spec.mirror),
        request_headers=header_ops(spec.headers.request if spec.headers else None),
        response_headers=header_ops(spec.headers.response if spec.headers else None),
        prefix_rewrite=spec.rewrite.prefix if spec.rewrite else None,
        rate_limit=rate_limit(spec.rate_limit),
        host_rewrite=spec.rewrite.authority if spec.rewrite else None,
        regex_rewrite=regex_rewrite(spec.rewrite),
        redirect=redirect(spec.redirect),
        direct_response=direct_response(spec.direct_response),
        cors=cors(spec.cors),
    )
    return without_forwarding(built) if built.answers_locally else built


def without_forwarding(built: Route) -> Route:
    """A route the caller's sidecar answers sends nowhere: no destinations, and none of the
    defaults' timeout and retries (validation keeps the route's own out)."""
    return dataclasses.replace(built, to=(), timeout_ms=None, retries=None)


def regex_rewrite(spec: RewriteSpec | None) -> RegexRewrite | None:
    if spec is None or spec.regex is None:
        return None
    return RegexRewrite(spec.regex.pattern, spec.regex.substitution)


def redirect(spec: RedirectSpec | None) -> Redirect | None:
    if spec is None:
        return None
    return Redirect(spec.code, spec.scheme, spec.host, spec.port, spec.path, spec.prefix)


def direct_response(spec: DirectResponseSpec | None) -> DirectResponse | None:
    return None if spec is None else DirectResponse(spec.status, spec.body)


def cors(spec: CorsSpec | None) -> Cors | None:
    """Origins in the file's order (any one allows); `max_age` in whole seconds, as Envoy's."""
    if spec is None:
        return None
    max_age = millis(spec.max_age)
    return Cors(
        allow_origins=tuple(value_match("origin", o) for o in spec.allow_origins),
        allow_methods=tuple(spec.allow_methods),
        allow_headers=tuple(spec.allow_headers),
        expose_headers=tuple(spec.expose_headers),
        max_age_s=None if max_age is None else max_age // 1000,
        allow_credentials=spec.allow_credentials,
    )


def with_service_cors(routes: list[Route], service_cors: Cors | None) -> list[Route]:
    """A route without a `cors` of its own has the service's."""
    if service_cors is None:
        return routes
    return [r if r.cors is not None else dataclasses.replace(r, cors=service_cors) for r in routes]


def fault(spec: FaultSpec | None) -> Fault | None:
    if spec is None:
        return None
    delay, abort = spec.delay, spec.abort
    return Fault(
        delay_ms=parse_duration(delay.fixed) if delay else None,
        delay_percent=delay.percent if delay else 100,
        abort_status=abort.status if abort else None,
        abort_percent=abort.percent if abort else 100,
        abort_grpc_status=abort.grpc_status if abort else None,
    )


def mirror(spec: MirrorSpec | None) -> Mirror | None:
    return None if spec is None else Mirror(spec.subset, spec.percent)


def header_ops(spec: HeaderOpsSpec | None) -> HeaderOps:
    """Header names lower-cased, as HTTP/2 and Envoy use them; sorted for stable output."""
    if spec is None:
        return HeaderOps()
    return HeaderOps(
        add=tuple(sorted((k.lower(), v) for k, v in spec.add.items())),
        set=tuple(sorted((k.lower(), v) for k, v in spec.set.items())),
        remove=tuple(sorted({k.lower() for k in spec.remove})),
    )


def default_route(defaults: DefaultsSpec) -> Route:
    """What a service without `routes:` gets: everything to the whole service."""
    return route(RouteSpec(), defaults, DEFAULT_ROUTE)


def route_match(spec: MatchSpec | None) -> RouteMatch:
    """Header names are lower-cased: Envoy matches HTTP headers by their lower-case name."""
    if spec is None:
        return RouteMatch()
    headers = sorted(value_match(name.lower(), v) for name, v in spec.headers.items())
    query = sorted(value_match(name, v) for name, v in spec.query.items())
    return RouteMatch(
        path_prefix=spec.path_prefix,
        path=spec.path,
        path_regex=spec.path_regex,
        headers=tuple(headers),
        query=tuple(query),
        methods=tuple(spec.methods),
        ignore_case=spec.ignore_case,
        caller=caller(spec.from_),
    )


def caller(spec: CallerSpec | None) -> Caller | None:
    return None if spec is None else Caller(spec.service, labels_of(spec.labels))


def value_match(name: str, spec: str | ValueMatchSpec) -> ValueMatch:
    """A plain string is an exact match; `present: false` means the value must be absent."""
    if isinstance(spec, str):
        return ValueMatch(name, "exact", spec)
    if spec.exact is not None:
        return ValueMatch(name, "exact", spec.exact, spec.ignore_case)
    if spec.prefix is not None:
        return ValueMatch(name, "prefix", spec.prefix, spec.ignore_case)
    if spec.regex is not None:
        return ValueMatch(name, "regex", spec.regex, spec.ignore_case)
    return ValueMatch(name, "present" if spec.present else "absent")


def destinations(to: list[DestinationSpec] | None) -> tuple[Destination, ...]:
    """No `to:` sends to the whole service; a lone entry without a weight takes all traffic."""
    if not to:
        return WHOLE_SERVICE
    return tuple(Destination(d.subset, 100 if d.weight is None else d.weight) for d in to)


# What a route gets when neither it nor the defaults say: Istio's default retry policy.
ISTIO_RETRIES = RetriesSpec(attempts=DEFAULT_RETRY_ATTEMPTS)


def retry_policy(spec: RetriesSpec | None) -> RetryPolicy:
    """Kept even with `attempts: 0`, which the route builder turns into "no retries"."""
    spec = spec or ISTIO_RETRIES
    on: list[str] = list(spec.conditions)
    codes = spec.status_codes
    if codes and "retriable-status-codes" not in on:
        on.append("retriable-status-codes")
    backoff = spec.backoff
    return RetryPolicy(
        spec.attempts,
        tuple(on),
        millis(spec.per_try_timeout),
        tuple(sorted(set(codes))),
        millis(backoff.base) if backoff else None,
        millis(backoff.max) if backoff else None,
    )


def millis(duration: str | None) -> int | None:
    return None if duration is None else parse_duration(duration)
