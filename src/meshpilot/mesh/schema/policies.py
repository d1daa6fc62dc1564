"""Policies (who may call whom, and custom hooks) and the mixer that evaluates custom ones."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from meshpilot.mesh.fields import Duration, HeaderName, SpecModel, host_address
from meshpilot.mesh.schema.routes import Method, ValueMatch
from meshpilot.mesh.schema.services import TracingSpec


def _host_port(value: str, example: str = "127.0.0.1:18081") -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PydanticCustomError(
            "address",
            "'{value}' is not HOST:PORT (e.g. {example})",
            {"value": value, "example": example},
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


def _collector(value: str) -> str:
    """HOST:PORT whose host an Envoy cluster can reach: an IP address or a DNS name."""
    host_address(_host_port(value, "127.0.0.1:9411").rpartition(":")[0].strip("[]"))
    return value


def _request_principal(value: str) -> str:
    """`ISS/SUB`, `ISS/*` (any subject of ISS) or `*` (any verified token), as Istio writes it."""
    issuer, sep, subject = value.rpartition("/")
    stars = value.count("*")
    if value != "*" and (not sep or not issuer or not subject or stars > (subject == "*")):
        raise PydanticCustomError(
            "request_principal",
            "'{value}' is not ISSUER/SUBJECT, ISSUER/* or * (e.g. https://auth.example.com/ann)",
            {"value": value},
        )
    return value


HostPort = Annotated[str, AfterValidator(_host_port)]
CollectorAddress = Annotated[str, AfterValidator(_collector)]
HookRef = Annotated[str, AfterValidator(_hook)]
PathGlob = Annotated[str, AfterValidator(_path_glob)]
RequestPrincipal = Annotated[str, AfterValidator(_request_principal)]
ClaimValues = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
PolicyAction = Literal["allow", "deny", "audit", "custom"]


class PolicyTargetSpec(SpecModel):
    """Which requests a policy is about; each list matches if any entry does."""

    methods: list[Method] = Field(default_factory=list)
    paths: list[PathGlob] = Field(default_factory=list)
    headers: dict[HeaderName, ValueMatch] = Field(default_factory=dict)


class PolicySpec(SpecModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    name: str = Field(min_length=1)
    service: str
    action: PolicyAction
    from_: list[str] | None = Field(default=None, alias="from", min_length=1)
    to: PolicyTargetSpec | None = None
    hook: HookRef | None = None
    # Verified JWTs (the service's `request_authentication`): whose, and with which claims.
    request_principals: list[RequestPrincipal] | None = Field(default=None, min_length=1)
    claims: dict[Annotated[str, Field(min_length=1)], ClaimValues] = Field(default_factory=dict)

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


class MixerSpec(SpecModel):
    address: HostPort = "127.0.0.1:18081"
    failure_mode: Literal["closed", "open"] = "closed"
    timeout: Duration = "500ms"
    redis: HostPort | None = None  # where the mixers keep the counters of global rate limits


class MeshTracingSpec(TracingSpec):
    """Sampling for every sidecar (a service may override it) and, with `collector`, where every
    sidecar reports its spans: a Zipkin v2 collector (HTTP JSON at /api/v2/spans, the default,
    as Istio's was) or an OpenTelemetry collector (OTLP over gRPC)."""

    collector: CollectorAddress | None = None
    protocol: Literal["zipkin", "opentelemetry"] = "zipkin"


class TelemetrySpec(SpecModel):
    access_log: bool = False
    tracing: MeshTracingSpec | None = None
