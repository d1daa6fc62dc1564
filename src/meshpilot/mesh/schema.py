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
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from meshpilot.mesh.durations import DurationError, parse_duration

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


Duration = Annotated[str, BeforeValidator(_duration)]
ServiceName = Annotated[str, AfterValidator(_service_name)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HttpPath = Annotated[str, AfterValidator(_http_path)]
Port = Annotated[int, Field(ge=1, le=65535)]
Labels = dict[str, str]
Loose = dict[str, Any]  # a key accepted but not yet interpreted


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RetriesSpec(_Spec):
    attempts: int = Field(ge=0)
    on: list[RetryOn] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON))
    per_try_timeout: Duration | None = None

    @model_validator(mode="after")
    def _retries_something(self) -> RetriesSpec:
        if self.attempts > 0 and not self.on:
            raise PydanticCustomError(
                "retry_on", "'on' is empty, so nothing would be retried; list a condition"
            )
        return self


class DefaultsSpec(_Spec):
    timeout: Duration | None = None
    retries: RetriesSpec | None = None


class MatchSpec(_Spec):
    path_prefix: HttpPath | None = None
    path: HttpPath | None = None
    headers: dict[HeaderName, str] = Field(default_factory=dict)
    methods: list[Method] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_path_rule(self) -> MatchSpec:
        if self.path is not None and self.path_prefix is not None:
            raise PydanticCustomError(
                "path_conflict", "give either 'path' or 'path_prefix', not both"
            )
        return self


class DestinationSpec(_Spec):
    subset: str | None = None
    weight: int | None = Field(default=None, ge=0, le=100)


class RouteSpec(_Spec):
    name: str = Field(min_length=1)
    match: MatchSpec | None = None
    to: list[DestinationSpec] | None = Field(default=None, min_length=1)
    timeout: Duration | None = None
    retries: RetriesSpec | None = None
    fault: Loose | None = None  # not yet interpreted
    mirror: Loose | None = None  # not yet interpreted


class EndpointSpec(_Spec):
    address: str = Field(min_length=1)
    port: Port
    labels: Labels = Field(default_factory=dict)


class ServiceSpec(_Spec):
    port: Port
    protocol: Protocol = "http"
    subsets: dict[str, Labels] = Field(default_factory=dict)
    endpoints: list[EndpointSpec] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(default_factory=list)
    run: list[Loose] | None = None  # not yet interpreted
    load_balancer: str | None = None  # not yet interpreted
    circuit_breaker: Loose | None = None  # not yet interpreted
    outlier_detection: Loose | None = None  # not yet interpreted
    rate_limit: Loose | None = None  # not yet interpreted


class MeshSpec(_Spec):
    mesh: str = Field(min_length=1)
    defaults: DefaultsSpec | None = None
    services: dict[ServiceName, ServiceSpec] = Field(default_factory=dict)
    mixer: Loose | None = None  # not yet interpreted
    telemetry: Loose | None = None  # not yet interpreted
    policies: list[Loose] | None = None  # not yet interpreted


# Rules that span several fields. They read the raw (YAML-constructed) data rather than a
# MeshSpec so that they still run when some other part of the file is ill-typed: every problem
# is reported in one go, not the type errors first and these on the next attempt.

Loc = tuple[str | int, ...]


class Issue(NamedTuple):
    """A problem found by a rule: where (`loc`, at the key node or its value) and why."""

    loc: Loc
    message: str
    at_key: bool = False


def cross_checks(data: object) -> list[Issue]:
    """Problems that no single field can see: weights, subset names, duplicate names."""
    issues: list[Issue] = []
    for name, service in _items(_get(data, "services")):
        issues += _service_checks(("services", name), service)
    return issues


def _service_checks(loc: Loc, service: object) -> Iterator[Issue]:
    subsets = _get(service, "subsets", {})
    known = list(subsets) if isinstance(subsets, dict) else None
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
        yield from _header_checks((*loc, "routes", i, "match", "headers"), route)


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
