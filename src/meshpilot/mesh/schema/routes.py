"""Routes of a service: matching, destinations and what happens on the way (retries, faults...)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from meshpilot.mesh.durations import parse_duration
from meshpilot.mesh.fields import (
    MAPPING_FORM,
    TEXT_FORM,
    Address,
    Duration,
    EditableHeader,
    HeaderName,
    HeaderValue,
    HttpPath,
    Labels,
    Percent,
    Port,
    PositiveDuration,
    Regex,
    SpecModel,
    WholeSeconds,
    host_address,
    shape,
)
from meshpilot.netaddr import is_ip

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
# Istio's default retry policy: what a route retries when neither it nor `defaults` say, and
# the conditions (and status) of a `retries` that leaves out `on` (and `retriable_status_codes`).
DEFAULT_RETRY_ATTEMPTS = 2
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
)
DEFAULT_RETRIABLE_STATUS_CODES = (503,)


class BackoffSpec(SpecModel):
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


class RetriesSpec(SpecModel):
    """`on` and `retriable_status_codes` left out: Istio's conditions, and 503 unless codes are
    given; either given: exactly what it lists."""

    attempts: int = Field(ge=0)
    on: list[RetryOn] | None = None
    per_try_timeout: Duration | None = None
    retriable_status_codes: list[Annotated[int, Field(ge=100, le=599)]] | None = None
    backoff: BackoffSpec | None = None

    @property
    def conditions(self) -> tuple[str, ...]:
        return tuple(self.on) if self.on is not None else DEFAULT_RETRY_ON

    @property
    def status_codes(self) -> tuple[int, ...]:
        if self.retriable_status_codes is not None:
            return tuple(self.retriable_status_codes)
        return DEFAULT_RETRIABLE_STATUS_CODES if self.on is None else ()

    @model_validator(mode="after")
    def _retries_something(self) -> RetriesSpec:
        if self.attempts > 0 and not self.conditions and not self.status_codes:
            raise PydanticCustomError(
                "retry_on", "'on' is empty, so nothing would be retried; list a condition"
            )
        return self


class ValueMatchSpec(SpecModel):
    """How a header or query parameter must look; exactly one rule."""

    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None
    present: bool | None = None
    ignore_case: bool = False

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

    @model_validator(mode="after")
    def _case_of_a_value(self) -> ValueMatchSpec:
        if self.ignore_case and self.present is not None:
            raise PydanticCustomError(
                "ignore_case",
                "'ignore_case' applies to 'exact', 'prefix' and 'regex', not 'present'",
            )
        return self


# A plain string means `exact`.
ValueMatch = Annotated[
    Annotated[str, Tag(TEXT_FORM)] | Annotated[ValueMatchSpec, Tag(MAPPING_FORM)],
    Discriminator(shape),
]


class CallerSpec(SpecModel):
    """Istio's sourceLabels: the route applies only to calls from sidecars of `service` (any
    service when left out) that carry every one of `labels`."""

    service: str | None = Field(default=None, min_length=1)
    labels: Labels = Field(default_factory=dict)

    @model_validator(mode="after")
    def _some_caller(self) -> CallerSpec:
        if self.service is None and not self.labels:
            raise PydanticCustomError("from", "give 'service', 'labels' or both")
        return self


class MatchSpec(SpecModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    path_prefix: HttpPath | None = None
    path: HttpPath | None = None
    path_regex: Regex | None = None
    headers: dict[HeaderName, ValueMatch] = Field(default_factory=dict)
    query: dict[Annotated[str, Field(min_length=1)], ValueMatch] = Field(default_factory=dict)
    methods: list[Method] = Field(default_factory=list)
    ignore_case: bool = False  # of the path rule; headers and query have their own
    from_: CallerSpec | None = Field(default=None, alias="from")

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

    @model_validator(mode="after")
    def _case_of_a_path(self) -> MatchSpec:
        paths = (self.path, self.path_prefix, self.path_regex)
        if self.ignore_case and all(p is None for p in paths):
            raise PydanticCustomError(
                "ignore_case",
                "'ignore_case' applies to 'path', 'path_prefix' or 'path_regex': give one "
                "(for headers and query, put 'ignore_case' in the value's rule)",
            )
        return self


class DestinationSpec(SpecModel):
    subset: str | None = None
    weight: int | None = Field(default=None, ge=0, le=100)


# gRPC status codes an abort can give: 1 (CANCELLED) to 16 (UNAUTHENTICATED); 0 is OK.
GrpcStatus = Annotated[int, Field(ge=1, le=16)]


class FaultDelaySpec(SpecModel):
    fixed: PositiveDuration
    percent: Percent = 100


class FaultAbortSpec(SpecModel):
    """The caller's sidecar answers in place of the destination: with an HTTP `status`, or, for
    gRPC, with a `grpc_status` (14: UNAVAILABLE) that the client sees as the call's status."""

    status: int | None = Field(default=None, ge=200, le=599)
    grpc_status: GrpcStatus | None = None
    percent: Percent = 100

    @model_validator(mode="after")
    def _one_status(self) -> FaultAbortSpec:
        if (self.status is None) == (self.grpc_status is None):
            raise PydanticCustomError(
                "abort", "give exactly one of 'status' (HTTP) or 'grpc_status' (gRPC)"
            )
        return self


class FaultSpec(SpecModel):
    delay: FaultDelaySpec | None = None
    abort: FaultAbortSpec | None = None

    @model_validator(mode="after")
    def _some_fault(self) -> FaultSpec:
        if self.delay is None and self.abort is None:
            raise PydanticCustomError("fault", "give 'delay', 'abort' or both")
        return self


class MirrorSpec(SpecModel):
    subset: str | None = None
    percent: Percent = 100


class HeaderOpsSpec(SpecModel):
    add: dict[EditableHeader, HeaderValue] = Field(default_factory=dict)
    set: dict[EditableHeader, HeaderValue] = Field(default_factory=dict)
    remove: list[EditableHeader] = Field(default_factory=list)


class HeadersSpec(SpecModel):
    request: HeaderOpsSpec | None = None
    response: HeaderOpsSpec | None = None


_RE2_ESCAPE = re.compile(r"\\(.?)")


def _substitution_problem(substitution: str, groups: int) -> str | None:
    """What RE2 would refuse in a rewrite: `\\N` beyond the pattern's groups, a stray `\\`."""
    for escaped in _RE2_ESCAPE.findall(substitution):
        if escaped == "\\":
            continue
        if not escaped.isdigit():
            return "'\\' must be followed by a group number (\\1) or another '\\'"
        if int(escaped) > groups:
            return f"'\\{escaped}' names a group the pattern does not have ({groups} groups)"
    return None


class RegexRewriteSpec(SpecModel):
    """Every match of `pattern` in the path is replaced by `substitution` (`\\1`: a group)."""

    pattern: Regex
    substitution: str

    @model_validator(mode="after")
    def _known_groups(self) -> RegexRewriteSpec:
        problem = _substitution_problem(self.substitution, re.compile(self.pattern).groups)
        if problem is not None:
            raise PydanticCustomError("substitution", problem)
        return self


def _authority(value: str) -> str:
    """HOST or HOST:PORT, as a Host header carries it (an IPv6 HOST in brackets)."""
    host, sep, port = value.rpartition(":")
    if not sep or is_ip(value):
        host, port = value, ""
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        raise PydanticCustomError(
            "authority", "'{value}': the port must be 1 to 65535", {"value": value}
        )
    if port and ":" in host and not host.startswith("["):
        raise PydanticCustomError(
            "authority", "'{value}': put an IPv6 address in brackets", {"value": value}
        )
    host_address(host.removeprefix("[").removesuffix("]"))
    return value


Authority = Annotated[str, AfterValidator(_authority)]


class RewriteSpec(SpecModel):
    """The path by `prefix` or `regex` (one of them) and the Host by `authority`."""

    prefix: HttpPath | None = None
    regex: RegexRewriteSpec | None = None
    authority: Authority | None = None

    @model_validator(mode="after")
    def _one_path_rewrite(self) -> RewriteSpec:
        if self.prefix is not None and self.regex is not None:
            raise PydanticCustomError(
                "rewrite", "give one of 'prefix' or 'regex': both rewrite the path"
            )
        if self.prefix is None and self.regex is None and self.authority is None:
            raise PydanticCustomError("rewrite", "give 'prefix', 'regex' or 'authority'")
        return self


RATE_FORM = "'N per DURATION', like '4 per 1m', '10 per 1s' or '100 per 1h'"
MIN_INTERVAL_MS = 50  # Envoy refills a local bucket at most every 50 ms
_RATE = re.compile(r"(?P<requests>[0-9]+) per (?P<interval>\S+)")


def parse_rate(text: str) -> tuple[int, int]:
    """'4 per 1m' as (4 requests, 60,000 ms); ValueError saying why not."""
    found = _RATE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a rate; write {RATE_FORM}")
    requests, interval_ms = int(found["requests"]), parse_duration(found["interval"])
    if requests < 1:
        raise ValueError(f"rate {text!r} allows no request; allow at least 1")
    if interval_ms < MIN_INTERVAL_MS:
        raise ValueError(f"rate {text!r} has an interval under {MIN_INTERVAL_MS}ms")
    return requests, interval_ms


def _rate(value: object) -> object:
    """Checked here so that the error points at the value in the file."""
    if isinstance(value, str):
        try:
            parse_rate(value)
        except ValueError as err:
            raise PydanticCustomError("rate", str(err)) from None
    return value


Rate = Annotated[str, BeforeValidator(_rate)]


class RateKeySpec(SpecModel):
    """What splits a limit into one bucket per value: a request header (`x-user`)."""

    header: HeaderName


class RateLimitSpec(SpecModel):
    """`rate: 4 per 1m` (or the older `requests_per_second: N`); `key` gives each value of a
    header its own bucket; `scope: global` counts in the mixer for all instances together."""

    requests_per_second: int | None = Field(default=None, ge=1)
    rate: Rate | None = None
    burst: int | None = Field(default=None, ge=1)
    key: RateKeySpec | None = None
    scope: Literal["local", "global"] = "local"

    @model_validator(mode="after")
    def _one_rate(self) -> RateLimitSpec:
        if (self.rate is None) == (self.requests_per_second is None):
            raise PydanticCustomError(
                "rate", "give the rate once: 'rate: 4 per 1m' or 'requests_per_second: N'"
            )
        return self

    def requests_and_interval(self) -> tuple[int, int]:
        """(requests, interval in ms) from whichever form the file used."""
        if self.rate is not None:
            return parse_rate(self.rate)
        assert self.requests_per_second is not None
        return self.requests_per_second, 1000


RedirectCode = Literal[301, 302, 303, 307, 308]


class RedirectSpec(SpecModel):
    """Istio's HTTPRedirect: the caller's sidecar answers `code` with a Location that is the
    request's URL with the given parts replaced (`prefix`: the part `path_prefix` matched)."""

    scheme: Literal["http", "https"] | None = None
    host: Address | None = None
    port: Port | None = None
    path: HttpPath | None = None
    prefix: HttpPath | None = None
    code: RedirectCode = 301

    @model_validator(mode="after")
    def _somewhere_else(self) -> RedirectSpec:
        if self.path is not None and self.prefix is not None:
            raise PydanticCustomError(
                "redirect", "give one of 'path' or 'prefix': both replace the path"
            )
        parts = (self.scheme, self.host, self.port, self.path, self.prefix)
        if all(p is None for p in parts):
            raise PydanticCustomError(
                "redirect",
                "give 'scheme', 'host', 'port', 'path' or 'prefix': a redirect to the same URL "
                "would loop",
            )
        return self


MAX_DIRECT_BODY_BYTES = 4096  # Envoy's default max_direct_response_body_size_bytes


class DirectResponseSpec(SpecModel):
    """Istio's HTTPDirectResponse: the caller's sidecar answers `status` with `body` (text)."""

    status: int = Field(ge=200, le=599)
    body: str | None = None

    @model_validator(mode="after")
    def _body_fits(self) -> DirectResponseSpec:
        size = len((self.body or "").encode())
        if size > MAX_DIRECT_BODY_BYTES:
            raise PydanticCustomError(
                "direct_response",
                "the body is {size} bytes; Envoy sends at most {limit}",
                {"size": size, "limit": MAX_DIRECT_BODY_BYTES},
            )
        return self


def _an_origin_rule(rule: str | ValueMatchSpec) -> str | ValueMatchSpec:
    if isinstance(rule, ValueMatchSpec) and rule.present is not None:
        raise PydanticCustomError(
            "origin", "an origin is matched by 'exact', 'prefix' or 'regex', not 'present'"
        )
    return rule


# A plain string is an exact origin (`https://shop.example`; `*` allows any origin).
OriginMatch = Annotated[ValueMatch, AfterValidator(_an_origin_rule)]


class CorsSpec(SpecModel):
    """Istio's CorsPolicy: which web origins a browser may call the service from, answered by
    the caller's sidecar (or gateway), which also answers preflights itself."""

    allow_origins: list[OriginMatch] = Field(min_length=1)
    allow_methods: list[Method] = Field(default_factory=list)
    allow_headers: list[HeaderName] = Field(default_factory=list)
    expose_headers: list[HeaderName] = Field(default_factory=list)
    max_age: WholeSeconds | None = None
    allow_credentials: bool = False


class RouteSpec(SpecModel):
    name: str | None = Field(default=None, min_length=1)  # None: names.unnamed_route
    match: MatchSpec | None = None
    to: list[DestinationSpec] | None = Field(default=None, min_length=1)
    timeout: Duration | None = None
    retries: RetriesSpec | None = None
    fault: FaultSpec | None = None
    mirror: MirrorSpec | None = None
    headers: HeadersSpec | None = None
    rewrite: RewriteSpec | None = None
    rate_limit: RateLimitSpec | None = None
    redirect: RedirectSpec | None = None
    direct_response: DirectResponseSpec | None = None
    cors: CorsSpec | None = None  # None: the service's `cors`, if any
