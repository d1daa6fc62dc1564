"""Routes of a service: matching, destinations and what happens on the way (retries, faults...)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BeforeValidator, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from meshpilot.mesh.durations import parse_duration
from meshpilot.mesh.fields import (
    MAPPING_FORM,
    TEXT_FORM,
    Duration,
    EditableHeader,
    HeaderName,
    HeaderValue,
    HttpPath,
    Percent,
    PositiveDuration,
    Regex,
    SpecModel,
    shape,
)

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
    Discriminator(shape),
]


class MatchSpec(SpecModel):
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


class DestinationSpec(SpecModel):
    subset: str | None = None
    weight: int | None = Field(default=None, ge=0, le=100)


class FaultDelaySpec(SpecModel):
    fixed: PositiveDuration
    percent: Percent = 100


class FaultAbortSpec(SpecModel):
    status: int = Field(ge=200, le=599)
    percent: Percent = 100


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


class RewriteSpec(SpecModel):
    prefix: HttpPath


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
