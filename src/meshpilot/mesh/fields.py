"""Building blocks of the mesh file's models: the strict base model and the checked value types.

Models are strict and forbid unknown keys: a typo such as `timout:` must be an error, not a
silently ignored setting. Values keep the file's spelling (durations stay strings); turning
them into runtime values is the builder's job (`translator/build.py`).

This module sits outside the `schema` package so that models kept elsewhere (the runner's
`RunSpec`) can build on it without importing the whole schema.
"""

from __future__ import annotations

import re
from typing import Annotated

import re2
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from meshpilot.mesh.durations import DurationError, parse_duration
from meshpilot.model.locality import locality_problem
from meshpilot.model.names import MIXER_SERVICE
from meshpilot.netaddr import is_ip

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_HEADER_NAME = re.compile(r":?[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


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
    if name == MIXER_SERVICE:
        raise PydanticCustomError(
            "service_name",
            "'{name}' is the mixer's identity: a service cannot take it",
            {"name": name},
        )
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
    """Envoy compiles a pattern with RE2, and the mixer (policies) with Python's `re`: a pattern
    must compile in both (RE2 has no lookaround, backreferences, atomic groups...)."""
    try:
        re.compile(pattern)
    except re.error as err:
        raise PydanticCustomError(
            "regex", "invalid regular expression: {error}", {"error": str(err)}
        ) from None
    try:
        re2.compile(pattern, _RE2_QUIET)
    except re2.error as err:
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise PydanticCustomError(
            "regex", "Envoy's regular expressions (RE2) refuse it: {error}", {"error": reason}
        ) from None
    return pattern


_RE2_QUIET = re2.Options()
_RE2_QUIET.log_errors = False  # the reason is in the exception; RE2 would also print it
_HOST = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


def host_address(address: str) -> str:
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


def _whole_seconds(duration: str) -> str:
    """For Envoy settings counted in seconds (TCP keepalive): no fraction to lose silently."""
    ms = parse_duration(duration)
    if ms == 0 or ms % 1000:
        raise PydanticCustomError("duration", "must be a whole number of seconds, at least 1s")
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


def _locality(text: str) -> str:
    problem = locality_problem(text)
    if problem is not None:
        raise PydanticCustomError("locality", problem)
    return text


def _locality_pattern(text: str) -> str:
    problem = locality_problem(text, wildcards=True)
    if problem is not None:
        raise PydanticCustomError("locality", problem)
    return text


def _region(text: str) -> str:
    if "/" in text or "*" in text:
        raise PydanticCustomError(
            "region", "'{text}': failover is between regions: a region name alone", {"text": text}
        )
    return text


Duration = Annotated[str, BeforeValidator(_duration)]
LocalityName = Annotated[str, AfterValidator(_locality)]  # region/zone/subzone
LocalityPattern = Annotated[str, AfterValidator(_locality_pattern)]  # may end in `/*`
Region = Annotated[str, Field(min_length=1), AfterValidator(_region)]
PositiveDuration = Annotated[str, BeforeValidator(_duration), AfterValidator(_positive)]
WholeSeconds = Annotated[str, BeforeValidator(_duration), AfterValidator(_whole_seconds)]
Regex = Annotated[str, AfterValidator(_regex)]
Address = Annotated[str, AfterValidator(host_address)]
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


def shape(value: object) -> str:
    return MAPPING_FORM if isinstance(value, dict) else TEXT_FORM


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
