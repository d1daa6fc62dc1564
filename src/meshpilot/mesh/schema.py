"""The mesh file's shape as pydantic models, plus the rules that span several fields.

Models are strict and forbid unknown keys: a typo such as `timout:` must be an error, not a
silently ignored setting. Values keep the file's spelling (durations stay strings); turning
them into runtime values is the builder's job (`translator/build.py`).

Keys marked "not yet interpreted" are accepted with a loose type so that files written for the
full contract validate today; later issues give them real schemas.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from meshpilot.mesh.durations import DurationError, parse_duration
from meshpilot.netaddr import is_ip

Protocol = Literal["http", "http2", "grpc", "tcp"]
Method = Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on condition names.
RetryOn = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("connect-failure", "refused-stream", "reset")

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HEADER_NAME = re.compile(r":?[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The choice the user most likely meant: same letters in another case, else a close one."""
    choices = list(choices)
    same_case = [c for c in choices if c.lower() == word.lower()]
    if same_case:
        return same_case[0]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _duration(value: object) -> object:
    """Check a duration here so that the error points at the value in the file."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value  # the str type check reports it
    if not isinstance(value, str):
        example = f"'{value}s' or '{value}ms'" if 0 <= value < 10**9 else "'2s' or '250ms'"
        raise PydanticCustomError("duration", f"a duration needs a unit: write {example}")
    try:
        parse_duration(value)
    except DurationError as err:
        raise PydanticCustomError("duration", str(err)) from None
    return value


def _service_name(name: str) -> str:
    """Service names become DNS-style host names and Envoy cluster names."""
    if _DNS_LABEL.fullmatch(name):
        return name
    hint = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")
    tail = f"; did you mean '{hint}'?" if _DNS_LABEL.fullmatch(hint) else ""
    raise PydanticCustomError(
        "service_name",
        "service name '{name}' is not a DNS label: use lowercase letters, digits and '-', "
        "start and end with a letter or digit, at most 63 characters{tail}",
        {"name": name, "tail": tail},
    )


def _header_name(name: str) -> str:
    """Envoy matches lower-cased header names, so a name must be an HTTP token."""
    if _HEADER_NAME.fullmatch(name):
        return name
    raise PydanticCustomError(
        "header_name",
        "'{name}' is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
        {"name": name},
    )


def _http_path(path: str) -> str:
    if path.startswith("/"):
        return path
    raise PydanticCustomError("http_path", "'{path}' must start with '/'", {"path": path})


def _regex(pattern: str) -> str:
    """Envoy uses RE2: a valid pattern without the Perl-only features RE2 lacks."""
    try:
        re.compile(pattern)
    except re.error as err:
        raise PydanticCustomError(
            "regex", "invalid regular expression: {error}", {"error": str(err)}
        ) from None
    unsupported = next((f for f in _RE2_UNSUPPORTED if f.search(pattern)), None)
    if unsupported is not None:
        raise PydanticCustomError(
            "regex",
            "Envoy's regular expressions (RE2) support no lookaround or backreferences",
        )
    return pattern


_RE2_UNSUPPORTED = (re.compile(r"\(\?<?[=!]"), re.compile(r"\\[1-9]"))
_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


def _host(address: str) -> str:
    """An endpoint address is an IP address or a DNS name (an external service)."""
    if not is_ip(address) and not _HOST.fullmatch(address):
        raise PydanticCustomError(
            "address", "'{address}' is neither an IP address nor a DNS name", {"address": address}
        )
    return address


def _positive(duration: str) -> str:
    if parse_duration(duration) == 0:
        raise PydanticCustomError("duration", "must be longer than 0")
    return duration


def _editable_header(name: str) -> str:
    """Envoy refuses to add, set or remove `host` and pseudo-headers (`:path`, ...)."""
    if name.startswith(":") or name.lower() == "host":
        raise PydanticCustomError(
            "header_name", "'{name}' cannot be added, set or removed", {"name": name}
        )
    return name


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise PydanticCustomError("header_value", "a header value cannot contain CR, LF or NUL")
    return value


Duration = Annotated[str, BeforeValidator(_duration)]
PositiveDuration = Annotated[str, BeforeValidator(_duration), AfterValidator(_positive)]
Regex = Annotated[str, AfterValidator(_regex)]
Address = Annotated[str, AfterValidator(_host)]
Percent = Annotated[int | float, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0)]
ServiceName = Annotated[str, AfterValidator(_service_name)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
EditableHeader = Annotated[str, AfterValidator(_header_name), AfterValidator(_editable_header)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
HttpPath = Annotated[str, AfterValidator(_http_path)]
Port = Annotated[int, Field(ge=1, le=65535)]
Labels = dict[str, str]


# Keys that take either a shorthand scalar or a mapping (`x-user: tester` or `x-user: {regex: ..}`)
# are unions told apart by the value's shape, so a problem is reported once, for the form used.
TEXT_FORM = "<text>"
MAPPING_FORM = "<mapping>"
SHAPE_TAGS = (TEXT_FORM, MAPPING_FORM)


def _shape(value: object) -> str:
    return MAPPING_FORM if isinstance(value, dict) else TEXT_FORM


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class BackoffSpec(_Spec):
    base: PositiveDuration
    max: PositiveDuration | None = None

    @model_validator(mode="after")
    def _max_not_below_base(self) -> BackoffSpec:
        if self.max is not None and parse_duration(self.max) < parse_duration(self.base):
            raise PydanticCustomError(
                "backoff",
                "'max' ({max}) is shorter than 'base' ({base})",
                {"max": self.max, "base": self.base},
            )
        return self


class RetriesSpec(_Spec):
    attempts: int = Field(ge=0)
    on: list[RetryOn] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    per_try_timeout: Duration | None = None
    retriable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] = Field(
        default_factory=list
    )
    backoff: BackoffSpec | None = None

    @model_validator(mode="after")
    def _retries_something(self) -> RetriesSpec:
        if self.attempts > 0 and not self.on and not self.retriable_status_codes:
            raise PydanticCustomError(
                "retry_on", "'on' is empty, so nothing would be retried; list a condition"
            )
        return self


class DefaultsSpec(_Spec):
    timeout: Duration | None = None
    retries: RetriesSpec | None = None


class ValueMatchSpec(_Spec):
    """How a header or query parameter must look; exactly one rule."""

    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None
    present: bool | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> ValueMatchSpec:
        given = [k for k in ("exact", "prefix", "regex", "present") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "value_match",
                "give exactly one of 'exact', 'prefix', 'regex' or 'present' (got {given})",
                {"given": ", ".join(given) or "none"},
            )
        return self


# A plain string means `exact`.
ValueMatch = Annotated[
    Annotated[str, Tag(TEXT_FORM)] | Annotated[ValueMatchSpec, Tag(MAPPING_FORM)],
    Discriminator(_shape),
]


class MatchSpec(_Spec):
    path_prefix: HttpPath | None = None
    path: HttpPath | None = None
    path_regex: Regex | None = None
    headers: dict[HeaderName, ValueMatch] = Field(default_factory=dict)
    query: dict[Annotated[str, Field(min_length=1)], ValueMatch] = Field(default_factory=dict)
    methods: list[Method] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_path_rule(self) -> MatchSpec:
        given = [k for k in ("path", "path_prefix", "path_regex") if getattr(self, k) is not None]
        if len(given) > 1:
            raise PydanticCustomError(
                "path_conflict",
                "give one of 'path', 'path_prefix' or 'path_regex', not {given}",
                {"given": " and ".join(given)},
            )
        return self


class DestinationSpec(_Spec):
    subset: str | None = None
    weight: int | None = Field(default=None, ge=0, le=100)


class FaultDelaySpec(_Spec):
    fixed: PositiveDuration
    percent: Percent = 100


class FaultAbortSpec(_Spec):
    status: int = Field(ge=200, le=599)
    percent: Percent = 100


class FaultSpec(_Spec):
    delay: FaultDelaySpec | None = None
    abort: FaultAbortSpec | None = None

    @model_validator(mode="after")
    def _some_fault(self) -> FaultSpec:
        if self.delay is None and self.abort is None:
            raise PydanticCustomError("fault", "give 'delay', 'abort' or both")
        return self


class MirrorSpec(_Spec):
    subset: str | None = None
    percent: Percent = 100


class HeaderOpsSpec(_Spec):
    add: dict[EditableHeader, HeaderValue] = Field(default_factory=dict)
    set: dict[EditableHeader, HeaderValue] = Field(default_factory=dict)
    remove: list[EditableHeader] = Field(default_factory=list)


class HeadersSpec(_Spec):
    request: HeaderOpsSpec | None = None
    response: HeaderOpsSpec | None = None


class RewriteSpec(_Spec):
    prefix: HttpPath


class RateLimitSpec(_Spec):
    requests_per_second: int = Field(ge=1)
    burst: int | None = Field(default=None, ge=1)


class RouteSpec(_Spec):
    name: str = Field(min_length=1)
    match: MatchSpec | None = None
    to: list[DestinationSpec] | None = Field(default=None, min_length=1)
    timeout: Duration | None = None
    retries: RetriesSpec | None = None
    fault: FaultSpec | None = None
    mirror: MirrorSpec | None = None
    headers: HeadersSpec | None = None
    rewrite: RewriteSpec | None = None
    rate_limit: RateLimitSpec | None = None


class EndpointSpec(_Spec):
    address: Address
    port: Port
    labels: Labels = Field(default_factory=dict)


LbPolicy = Literal["round_robin", "least_request", "random", "ring_hash", "maglev"]
HASHING_POLICIES = ("ring_hash", "maglev")


class CookieSpec(_Spec):
    name: str = Field(min_length=1)
    ttl: Duration | None = None
    path: HttpPath | None = None


class HashSpec(_Spec):
    """What consistent hashing keys on; exactly one."""

    header: HeaderName | None = None
    cookie: CookieSpec | None = None
    source_ip: Literal[True] | None = None
    query_parameter: str | None = None

    @model_validator(mode="after")
    def _one_key(self) -> HashSpec:
        keys = ("header", "cookie", "source_ip", "query_parameter")
        given = [k for k in keys if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "hash", "give exactly one of 'header', 'cookie', 'source_ip' or 'query_parameter'"
            )
        return self


class LoadBalancerSpec(_Spec):
    policy: LbPolicy
    hash: HashSpec | None = None

    @model_validator(mode="after")
    def _hash_fits_policy(self) -> LoadBalancerSpec:
        if self.policy in HASHING_POLICIES and self.hash is None:
            raise PydanticCustomError(
                "hash",
                "'{policy}' needs 'hash': what requests are hashed on",
                {"policy": self.policy},
            )
        if self.policy not in HASHING_POLICIES and self.hash is not None:
            raise PydanticCustomError(
                "hash",
                "'hash' only applies to ring_hash and maglev, not {policy}",
                {"policy": self.policy},
            )
        return self


# A plain name means that policy.
LoadBalancer = Annotated[
    Annotated[LbPolicy, Tag(TEXT_FORM)] | Annotated[LoadBalancerSpec, Tag(MAPPING_FORM)],
    Discriminator(_shape),
]


class CircuitBreakerSpec(_Spec):
    max_connections: Count | None = None
    max_pending_requests: Count | None = None
    max_requests: Count | None = None
    max_retries: Count | None = None


class OutlierDetectionSpec(_Spec):
    consecutive_5xx: Count | None = None
    consecutive_gateway_errors: Count | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = None


class TrafficPolicySpec(_Spec):
    """Per-subset overrides of the service's traffic policy."""

    load_balancer: LoadBalancer | None = None
    circuit_breaker: CircuitBreakerSpec | None = None
    outlier_detection: OutlierDetectionSpec | None = None
    connect_timeout: Duration | None = None


class TlsSpec(_Spec):
    """TLS origination: the sidecar speaks TLS to the service's endpoints."""

    sni: str | None = None
    ca_file: str | None = None
    verify: bool = True


class TracingSpec(_Spec):
    sampling: Percent


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PydanticCustomError(
            "address", "'{value}' is not HOST:PORT (e.g. 127.0.0.1:18081)", {"value": value}
        )
    return value


def _hook(value: str) -> str:
    """`FILE.py:FUNCTION`, the file relative to the mesh file (or absolute)."""
    file, sep, function = value.rpartition(":")
    if not sep or not file.endswith(".py") or not function.isidentifier():
        raise PydanticCustomError(
            "hook",
            "'{value}' is not FILE.py:FUNCTION (e.g. hooks/ratings.py:check)",
            {"value": value},
        )
    return value


def _path_glob(value: str) -> str:
    if not value.startswith("/") and value != "*":
        raise PydanticCustomError(
            "path_glob", "'{value}' must start with '/' (or be '*')", {"value": value}
        )
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]
HookRef = Annotated[str, AfterValidator(_hook)]
PathGlob = Annotated[str, AfterValidator(_path_glob)]
PolicyAction = Literal["allow", "deny", "audit", "custom"]


class PolicyTargetSpec(_Spec):
    """Which requests a policy is about; each list matches if any entry does."""

    methods: list[Method] = Field(default_factory=list)
    paths: list[PathGlob] = Field(default_factory=list)
    headers: dict[HeaderName, ValueMatch] = Field(default_factory=dict)


class PolicySpec(_Spec):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    service: str
    action: PolicyAction
    from_: list[str] | None = Field(default=None, alias="from", min_length=1)
    to: PolicyTargetSpec | None = None
    hook: HookRef | None = None

    @model_validator(mode="after")
    def _hook_fits_action(self) -> PolicySpec:
        if self.action == "custom" and self.hook is None:
            raise PydanticCustomError("hook", "a custom policy needs 'hook: FILE.py:FUNCTION'")
        if self.action != "custom" and self.hook is not None:
            raise PydanticCustomError(
                "hook",
                "'hook' is only for custom policies (this one is {action})",
                {"action": self.action},
            )
        return self


class MixerSpec(_Spec):
    address: HostPort = "127.0.0.1:18081"
    failure_mode: Literal["closed", "open"] = "closed"
    timeout: Duration = "500ms"


class TelemetrySpec(_Spec):
    access_log: bool = False
    tracing: TracingSpec | None = None


RUN_PLACEHOLDERS = ("ip", "app_port", "service", "version")


def _command_template(command: str) -> str:
    """`run:` commands are templates filled in per replica; only known placeholders."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(command) if name is not None]
    except ValueError as err:
        raise PydanticCustomError(
            "template",
            "not a valid template ({error}); write {escaped} for a literal brace",
            {"error": str(err), "escaped": "'{{' or '}}'"},
        ) from None
    unknown = [f for f in fields if f not in RUN_PLACEHOLDERS]
    if unknown:
        raise PydanticCustomError(
            "template",
            "unknown placeholder {name}; use {known}",
            {
                "name": "'{" + unknown[0] + "}'",
                "known": ", ".join("{" + p + "}" for p in RUN_PLACEHOLDERS),
            },
        )
    return command


class RunSpec(_Spec):
    """How `meshpilot up` starts local instances of a service."""

    command: Annotated[str, Field(min_length=1), AfterValidator(_command_template)]
    version: str | None = None
    replicas: int = Field(default=1, ge=1, le=200)
    app_port: Port = 8080
    labels: Labels = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)


class ServiceSpec(_Spec):
    port: Port
    protocol: Protocol = "http"
    subsets: dict[str, Labels] = Field(default_factory=dict)
    endpoints: list[EndpointSpec] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(default_factory=list)
    run: list[RunSpec] = Field(default_factory=list)
    load_balancer: LoadBalancer | None = None
    circuit_breaker: CircuitBreakerSpec | None = None
    outlier_detection: OutlierDetectionSpec | None = None
    connect_timeout: Duration | None = None
    subset_policies: dict[str, TrafficPolicySpec] = Field(default_factory=dict)
    rate_limit: RateLimitSpec | None = None
    tls: TlsSpec | None = None
    tracing: TracingSpec | None = None
    egress: list[str] | None = None  # the services this one calls; None: every service


class MeshSpec(_Spec):
    mesh: str = Field(min_length=1)
    defaults: DefaultsSpec | None = None
    services: dict[ServiceName, ServiceSpec] = Field(default_factory=dict)
    mixer: MixerSpec | None = None
    telemetry: TelemetrySpec | None = None
    policies: list[PolicySpec] = Field(default_factory=list)


# Rules that span several fields. They read the raw (YAML-constructed) data rather than a
# MeshSpec so that they still run when some other part of the file is ill-typed: every problem
# is reported in one go, not the type errors first and these on the next attempt.

Loc = tuple[str | int, ...]


class Issue(NamedTuple):
    """A problem found by a rule: where (`loc`, at the key node or its value) and why."""

    loc: Loc
    message: str
    at_key: bool = False


def cross_checks(data: object, base_dir: Path | None = None) -> list[Issue]:
    """Problems that no single field can see: weights, subset names, duplicate names, policies
    naming services that do not exist, hook files that are not there (relative to `base_dir`)."""
    issues: list[Issue] = []
    for name, service in _items(_get(data, "services")):
        issues += _service_checks(("services", name), service)
    services = [name for name, _ in _items(_get(data, "services"))]
    issues += _policy_checks(_get(data, "policies"), services, base_dir)
    issues += _egress_checks(_get(data, "services"), services)
    issues += _tcp_port_checks(_get(data, "services"))
    issues += _host_name_checks(_get(data, "services"))
    issues += _file_checks(_get(data, "services"), base_dir)
    return issues


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


def _policy_checks(policies: object, services: list[str], base_dir: Path | None) -> Iterator[Issue]:
    seen: dict[str, int] = {}
    known = set(services)
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
            if isinstance(source, str) and source not in known:
                yield Issue((*loc, "from", j), _unknown_service(source, services))
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
    seen: dict[str, int] = {}
    for i, route in _entries(_get(service, "routes")):
        name = _get(route, "name")
        if isinstance(name, str) and name in seen:
            yield Issue(
                (*loc, "routes", i, "name"),
                f"duplicate route name '{name}' (also used by routes[{seen[name]}])",
            )
        elif isinstance(name, str):
            seen[name] = i
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
_HTTP_ONLY_ROUTE_KEYS = ("match", "timeout", "retries", "fault", "mirror", "headers", "rewrite")


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


def _get(data: object, key: str, default: object = None) -> object:
    return data.get(key, default) if isinstance(data, dict) else default


def _items(data: object) -> Iterator[tuple[str, object]]:
    if isinstance(data, dict):
        yield from ((k, v) for k, v in data.items() if isinstance(k, str))


def _entries(data: object) -> Iterator[tuple[int, object]]:
    if isinstance(data, list):
        yield from enumerate(data)
