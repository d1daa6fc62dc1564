"""A service: its port and protocol, endpoints, subsets, routes and traffic policy."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

from meshpilot.mesh.fields import (
    MAPPING_FORM,
    TEXT_FORM,
    Address,
    Count,
    Duration,
    HeaderName,
    HttpPath,
    Labels,
    LocalityName,
    LocalityPattern,
    Percent,
    Port,
    PositiveDuration,
    Region,
    SpecModel,
    WholeSeconds,
    shape,
)
from meshpilot.mesh.schema.authentication import RequestAuthenticationSpec
from meshpilot.mesh.schema.routes import CorsSpec, RateLimitSpec, RouteSpec
from meshpilot.mesh.schema.security import ServiceSecuritySpec
from meshpilot.runner.spec import RunSpec

Protocol = Literal["http", "http2", "grpc", "tcp"]


class EndpointSpec(SpecModel):
    address: Address
    port: Port
    labels: Labels = Field(default_factory=dict)
    locality: LocalityName | None = None


LbPolicy = Literal["round_robin", "least_request", "random", "ring_hash", "maglev"]
HASHING_POLICIES = ("ring_hash", "maglev")


class CookieSpec(SpecModel):
    name: str = Field(min_length=1)
    ttl: Duration | None = None
    path: HttpPath | None = None


class HashSpec(SpecModel):
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


WARMING_POLICIES = ("round_robin", "least_request")


class FailoverSpec(SpecModel):
    """Callers in region `from` go to region `to` when their own region has no healthy member."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    from_: Region = Field(alias="from")
    to: Region

    @model_validator(mode="after")
    def _two_regions(self) -> FailoverSpec:
        if self.from_ == self.to:
            raise PydanticCustomError("failover", "'from' and 'to' must be different regions")
        return self


LocalityShare = Annotated[int, Field(ge=1, le=100)]


class DistributeSpec(SpecModel):
    """Callers in `from` send these percentages of their requests to these localities."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    from_: LocalityPattern = Field(alias="from")
    to: dict[LocalityPattern, LocalityShare] = Field(min_length=1)

    @model_validator(mode="after")
    def _whole(self) -> DistributeSpec:
        total = sum(self.to.values())
        if total != 100:
            raise PydanticCustomError(
                "distribute", "shares add up to {total}; they must add up to 100", {"total": total}
            )
        return self


class LocalityLbSpec(SpecModel):
    """Istio's localityLbSetting: failover between regions, or a distribution; not both."""

    enabled: bool = True
    failover: list[FailoverSpec] = Field(default_factory=list)
    distribute: list[DistributeSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_kind(self) -> LocalityLbSpec:
        if self.failover and self.distribute:
            raise PydanticCustomError("locality", "give 'failover' or 'distribute', not both")
        return self


class LoadBalancerSpec(SpecModel):
    policy: LbPolicy = "round_robin"
    hash: HashSpec | None = None
    warmup: PositiveDuration | None = None  # slow start of new instances
    locality: LocalityLbSpec | None = None

    @model_validator(mode="after")
    def _settings_fit_policy(self) -> LoadBalancerSpec:
        if self.policy in HASHING_POLICIES and self.hash is None:
            raise PydanticCustomError(
                "hash",
                "'{policy}' needs 'hash': what requests are hashed on",
                {"policy": self.policy},
            )
        _only_with(self.policy, "hash", self.hash, HASHING_POLICIES)
        _only_with(self.policy, "warmup", self.warmup, WARMING_POLICIES)
        return self


def _only_with(policy: str, key: str, value: object, policies: tuple[str, ...]) -> None:
    if value is not None and policy not in policies:
        raise PydanticCustomError(
            key,
            "'{key}' only applies to {policies}, not {policy}",
            {"key": key, "policies": " and ".join(policies), "policy": policy},
        )


# A plain name means that policy.
LoadBalancer = Annotated[
    Annotated[LbPolicy, Tag(TEXT_FORM)] | Annotated[LoadBalancerSpec, Tag(MAPPING_FORM)],
    Discriminator(shape),
]


class CircuitBreakerSpec(SpecModel):
    max_connections: Count | None = None
    max_pending_requests: Count | None = None
    max_requests: Count | None = None
    max_retries: Count | None = None
    max_requests_per_connection: Annotated[int, Field(ge=1)] | None = None


class OutlierDetectionSpec(SpecModel):
    consecutive_5xx: Count | None = None
    consecutive_gateway_errors: Count | None = None
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: Annotated[int, Field(ge=0, le=100)] | None = None
    min_health_percent: Percent | None = None


class TcpKeepaliveSpec(SpecModel):
    """Keepalive probes on connections to the members; a key left out keeps the system's."""

    time: WholeSeconds | None = None  # idle time before the first probe
    interval: WholeSeconds | None = None  # between probes
    probes: Annotated[int, Field(ge=1)] | None = None  # unanswered probes that drop it


class TrafficPolicySpec(SpecModel):
    """Per-subset overrides of the service's traffic policy."""

    load_balancer: LoadBalancer | None = None
    circuit_breaker: CircuitBreakerSpec | None = None
    outlier_detection: OutlierDetectionSpec | None = None
    connect_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    tcp_keepalive: TcpKeepaliveSpec | None = None


class TlsSpec(SpecModel):
    """TLS origination: the sidecar speaks TLS to the service's endpoints."""

    sni: str | None = None
    ca_file: str | None = None
    verify: bool = True


class TracingSpec(SpecModel):
    """A service's own sampling. Where spans go is mesh-wide (`telemetry.tracing.collector`):
    one collector cluster serves every sidecar, so that a trace's spans end up in one place."""

    sampling: Percent


class ServiceSpec(SpecModel):
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
    idle_timeout: Duration | None = None
    tcp_keepalive: TcpKeepaliveSpec | None = None
    subset_policies: dict[str, TrafficPolicySpec] = Field(default_factory=dict)
    rate_limit: RateLimitSpec | None = None
    tls: TlsSpec | None = None
    tracing: TracingSpec | None = None
    egress: list[str] | None = None  # the services this one calls; None: every service
    security: ServiceSecuritySpec | None = None  # overrides the mesh-wide `security.mtls`
    # Every caller's sidecar also listens on its app's IP at this port (true: the service's
    # port) for this service alone, whatever the Host: for apps that cannot set one.
    outbound_port: bool | Port | None = None
    request_authentication: RequestAuthenticationSpec | None = None  # JWTs verified on arrival
    cors: CorsSpec | None = None  # of every route that sets no `cors` of its own
