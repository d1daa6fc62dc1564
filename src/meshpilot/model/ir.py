"""The mesh as plain frozen values: no Envoy types, no YAML, defaults already applied.

The IR is what the Envoy builders consume. Everything is a tuple or a frozen dataclass so that
values compare and hash by content, which lets the translator reuse work for unchanged parts.
Durations are whole milliseconds. Labels are sorted (key, value) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

from meshpilot.model.locality import Locality, LocalityLb

Labels = tuple[tuple[str, str], ...]
Pairs = tuple[tuple[str, str], ...]


def labels_of(mapping: dict[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


MatchKind = Literal["exact", "prefix", "regex", "present", "absent"]


@dataclass(frozen=True, order=True)
class ValueMatch:
    """A condition on a header or query parameter named `name`."""

    name: str
    kind: MatchKind
    value: str = ""
    ignore_case: bool = False  # of `value`: exact, prefix and regex


@dataclass(frozen=True)
class Caller:
    """Istio's sourceLabels: the sidecars whose calls a route applies to, by their service
    (None: any) and labels (all of them). Not a request's property: a sidecar's routes are
    rendered for it, and a route that does not apply to it is left out of its table."""

    service: str | None = None
    labels: Labels = ()

    def matches(self, service: str, labels: Labels) -> bool:
        same_service = self.service is None or self.service == service
        return same_service and set(self.labels) <= set(labels)


@dataclass(frozen=True)
class RouteMatch:
    """All given conditions must hold. Nothing given matches every request."""

    path_prefix: str | None = None
    path: str | None = None
    path_regex: str | None = None
    headers: tuple[ValueMatch, ...] = ()
    query: tuple[ValueMatch, ...] = ()
    methods: tuple[str, ...] = ()
    ignore_case: bool = False  # of the path rule
    caller: Caller | None = None  # None: every caller


@dataclass(frozen=True)
class Destination:
    """A share of a route's traffic: a subset, or the whole service when `subset` is None."""

    subset: str | None
    weight: int = 100


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    on: tuple[str, ...]
    per_try_timeout_ms: int | None = None
    retriable_status_codes: tuple[int, ...] = ()
    backoff_base_ms: int | None = None
    backoff_max_ms: int | None = None


@dataclass(frozen=True)
class Fault:
    """Injected at the caller's sidecar: a delay and/or an abort, each for a share of requests."""

    delay_ms: int | None = None
    delay_percent: float = 100
    abort_status: int | None = None
    abort_percent: float = 100
    abort_grpc_status: int | None = None  # in place of `abort_status`, for gRPC callers


@dataclass(frozen=True)
class Mirror:
    """A copy of a share of requests, sent to a subset (or the whole service); replies dropped."""

    subset: str | None
    percent: float = 100


@dataclass(frozen=True)
class HeaderOps:
    add: Pairs = ()  # appended to any existing value
    set: Pairs = ()  # replaces any existing value
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegexRewrite:
    """The path with every match of `pattern` (RE2) replaced by `substitution` (`\\1`: a group)."""

    pattern: str
    substitution: str


@dataclass(frozen=True)
class Redirect:
    """Answered by the caller's sidecar: `code`, and as Location the request's URL with the
    parts given here replaced (`prefix` replaces the part `path_prefix` matched)."""

    code: int = 301
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    prefix: str | None = None


@dataclass(frozen=True)
class DirectResponse:
    """Answered by the caller's sidecar: `status` with `body` (None: no body)."""

    status: int
    body: str | None = None


@dataclass(frozen=True)
class Cors:
    """Istio's CorsPolicy: requests whose Origin matches one of `allow_origins` (conditions on
    the `origin` header) get the access-control-* answers; a preflight is answered by the
    caller's sidecar. `max_age_s` None: browsers' own default."""

    allow_origins: tuple[ValueMatch, ...]
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: int | None = None
    allow_credentials: bool = False


RateLimitScope = Literal["local", "global"]


@dataclass(frozen=True)
class RateLimit:
    """`requests` per `interval_ms`. Local: a token bucket of `burst` tokens in each sidecar,
    refilled with `requests` tokens every interval. Global: a fixed window of `interval_ms`
    counted in the mixer for all instances together. `key_header`: a bucket per value."""

    requests: int
    interval_ms: int
    burst: int
    key_header: str | None = None
    scope: RateLimitScope = "local"


@dataclass(frozen=True)
class Route:
    name: str
    match: RouteMatch
    to: tuple[Destination, ...]
    timeout_ms: int | None = None
    retries: RetryPolicy | None = None
    fault: Fault | None = None
    mirror: Mirror | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    prefix_rewrite: str | None = None
    rate_limit: RateLimit | None = None
    host_rewrite: str | None = None  # the Host (authority) the destination sees
    regex_rewrite: RegexRewrite | None = None
    # A route with one of these is answered by the caller's sidecar: `to` is empty.
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    cors: Cors | None = None  # the route's own, else the service's

    @property
    def answers_locally(self) -> bool:
        return self.redirect is not None or self.direct_response is not None


HashKind = Literal["header", "cookie", "source_ip", "query_parameter"]


@dataclass(frozen=True)
class HashKey:
    """What consistent hashing keys on (`name` is the header, cookie or parameter)."""

    kind: HashKind
    name: str = ""
    ttl_ms: int | None = None
    path: str | None = None


@dataclass(frozen=True)
class LoadBalancer:
    policy: str = "round_robin"
    hash: HashKey | None = None
    warmup_ms: int | None = None  # slow start: a new member's share grows over this long
    locality: LocalityLb | None = None  # None: the defaults (failover with outlier detection)


@dataclass(frozen=True)
class CircuitBreaker:
    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None
    max_requests_per_connection: int | None = None  # 1: a new connection for every request


@dataclass(frozen=True)
class OutlierDetection:
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    interval_ms: int | None = None
    base_ejection_time_ms: int | None = None
    max_ejection_percent: int | None = None
    # Below this share of healthy members, balance over all of them (Envoy's panic threshold).
    min_health_percent: float | None = None


@dataclass(frozen=True)
class TcpKeepalive:
    """None keeps the system's setting."""

    time_s: int | None = None
    interval_s: int | None = None
    probes: int | None = None


@dataclass(frozen=True)
class TrafficPolicy:
    """How a cluster talks to its members: balancing, limits, ejection, connections."""

    load_balancer: LoadBalancer = LoadBalancer()
    circuit_breaker: CircuitBreaker | None = None
    outlier_detection: OutlierDetection | None = None
    connect_timeout_ms: int | None = None
    idle_timeout_ms: int | None = None  # an unused connection to a member is closed after this
    tcp_keepalive: TcpKeepalive | None = None


@dataclass(frozen=True)
class UpstreamTls:
    """TLS origination to the service's endpoints; `ca_file` None means the system's CAs."""

    sni: str | None = None
    ca_file: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class JwtHeader:
    """A header a token is read from, after `prefix`."""

    name: str
    prefix: str = ""


@dataclass(frozen=True)
class JwtProvider:
    """Tokens of `issuer` verified at the destination with the keys of `jwks` (the text of the
    file `jwks_file`), for one of `audiences` (none: any). No `from_headers`/`from_params`:
    Envoy's defaults (`Authorization: Bearer`, `access_token`)."""

    issuer: str
    jwks_file: str
    jwks: str
    audiences: tuple[str, ...] = ()
    forward: bool = False
    from_headers: tuple[JwtHeader, ...] = ()
    from_params: tuple[str, ...] = ()


@dataclass(frozen=True)
class Subset:
    """`policy` is the service's traffic policy with this subset's overrides applied."""

    name: str
    labels: Labels
    policy: TrafficPolicy = TrafficPolicy()


@dataclass(frozen=True)
class StaticEndpoint:
    address: str
    port: int
    labels: Labels = ()
    locality: Locality | None = None


# strict: the inbound port accepts mesh certificates only; permissive: plaintext too.
MtlsMode = Literal["strict", "permissive"]


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    protocol: str
    subsets: tuple[Subset, ...] = ()
    endpoints: tuple[StaticEndpoint, ...] = ()
    routes: tuple[Route, ...] = ()
    policy: TrafficPolicy = TrafficPolicy()
    tls: UpstreamTls | None = None
    rate_limit: RateLimit | None = None
    tracing_sampling: float | None = None  # overrides the mesh's telemetry sampling
    egress: tuple[str, ...] | None = None  # the services its sidecars may call; None: all
    # Where callers' sidecars listen for this service alone, on their app's IP (None: only 15001).
    outbound_port: int | None = None
    # With workload identity: the SPIFFE ID its sidecars present, which callers require
    # (None: no identity, or a service whose static endpoints have no sidecar), and the mode of
    # its sidecars' inbound port (None: plaintext).
    spiffe_id: str | None = None
    mtls: MtlsMode | None = None
    jwt: tuple[JwtProvider, ...] = ()  # tokens verified at its sidecars' inbound port

    def __hash__(self) -> int:
        """Hashed once: services key the translator's caches, 10,000 lookups per change."""
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def matches_callers(self) -> bool:
        """Whether its routes depend on who calls (`match.from`): callers' tables differ."""
        return any(r.match.caller is not None for r in self.routes)

    def limits(self, scope: RateLimitScope) -> dict[str | None, RateLimit]:
        """The rate limits of one scope by route name; the service's own under None."""
        found: dict[str | None, RateLimit] = {
            r.name: r.rate_limit for r in self.routes if r.rate_limit is not None
        }
        if self.rate_limit is not None:
            found[None] = self.rate_limit
        return {name: limit for name, limit in found.items() if limit.scope == scope}

    @property
    def is_http(self) -> bool:
        return self.protocol != "tcp"

    @property
    def speaks_http2(self) -> bool:
        return self.protocol in ("http2", "grpc")


PolicyAction = Literal["allow", "deny", "audit", "custom"]


@dataclass(frozen=True)
class PolicyTarget:
    """Requests a policy is about: any of the methods, any of the path globs, all the headers.

    Empty means any. A path glob is a path in which `*` stands for any characters.
    """

    methods: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    headers: tuple[ValueMatch, ...] = ()


@dataclass(frozen=True)
class RequestPrincipal:
    """Whose verified token: `issuer` (None: any) and `subject` (None: any of that issuer)."""

    issuer: str | None = None
    subject: str | None = None


@dataclass(frozen=True)
class ClaimMatch:
    """A verified token's claim `name` is one of `values`, or a list holding one of them."""

    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    """An access policy, evaluated at the destination `service`'s sidecar.

    `sources` None means any caller, including requests no sidecar vouches for.
    `hook` is `ABSOLUTE_FILE.py:FUNCTION` for custom policies.
    `principals` None means any request, with a verified token or without; `claims` must all
    hold (a request without a verified token has no claims).
    """

    name: str
    service: str
    action: PolicyAction
    sources: tuple[str, ...] | None = None
    target: PolicyTarget = PolicyTarget()
    hook: str | None = None
    principals: tuple[RequestPrincipal, ...] | None = None
    claims: tuple[ClaimMatch, ...] = ()


@dataclass(frozen=True)
class Mixer:
    """Where sidecars reach the policy & telemetry service, and what they do when they cannot."""

    address: str
    fail_open: bool = False
    timeout_ms: int = 500
    spiffe_id: str | None = None  # the identity sidecars require of it (None: plaintext)
    redis: str | None = None  # HOST:PORT of the counters of global rate limits


TracingProtocol = Literal["zipkin", "opentelemetry"]


@dataclass(frozen=True)
class Collector:
    """Where sidecars report trace spans: Zipkin v2 (HTTP JSON) or OpenTelemetry (OTLP/gRPC)."""

    address: str  # HOST:PORT
    protocol: TracingProtocol = "zipkin"


@dataclass(frozen=True)
class Telemetry:
    access_log: bool = False
    sampling: float | None = None  # percent of requests traced; None: tracing off
    collector: Collector | None = None  # None: spans are reported nowhere


@dataclass(frozen=True)
class GatewayRoute:
    """Requests whose path starts with `path_prefix` (None: any) go to `service`'s routes."""

    service: str
    path_prefix: str | None = None


@dataclass(frozen=True)
class GatewayHost:
    host: str  # the Host without port, or `*` for any host the gateway has no entry for
    routes: tuple[GatewayRoute, ...]


@dataclass(frozen=True)
class Gateway:
    """An edge proxy of the mesh: listens at `address:port` (with TLS from files when
    `tls_files` is set: certificate, key) and sends requests to services by Host and path."""

    name: str
    address: str
    port: int
    hosts: tuple[GatewayHost, ...]
    tls_files: tuple[str, str] | None = None

    @property
    def services(self) -> tuple[str, ...]:
        """The services it sends to, sorted (what its view holds)."""
        return tuple(sorted({r.service for h in self.hosts for r in h.routes}))


@dataclass(frozen=True)
class MeshIR:
    name: str
    services: tuple[Service, ...]
    policies: tuple[Policy, ...] = ()
    mixer: Mixer | None = None  # set when sidecars need one: custom policies or access logs
    telemetry: Telemetry = Telemetry()
    # With workload identity (a secure control plane): sources are SPIFFE IDs of this trust
    # domain. None: no identity, plaintext between sidecars, no caller is known.
    trust_domain: str | None = None
    gateways: tuple[Gateway, ...] = ()

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    @property
    def files_read(self) -> tuple[str, ...]:
        """The files besides the mesh file whose text the IR holds (JWKS files), sorted."""
        return tuple(sorted({p.jwks_file for s in self.services for p in s.jwt}))
