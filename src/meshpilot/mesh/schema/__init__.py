"""The mesh file's shape as pydantic models: `MeshSpec` and its sections, one module per topic.

Models are strict and forbid unknown keys (see `mesh/fields.py`). Rules that relate several parts
of the file (routes to subsets, policies to services...) are in `mesh/references.py`.

Keys marked "not yet interpreted" are accepted with a loose type so that files written for the
full contract validate today; later issues give them real schemas.
"""

from __future__ import annotations

from pydantic import Field

from meshpilot.mesh.fields import Duration, ServiceName, SpecModel
from meshpilot.mesh.schema.authentication import (
    JwtHeaderSpec,
    JwtRuleSpec,
    RequestAuthenticationSpec,
)
from meshpilot.mesh.schema.gateways import GatewayRouteSpec, GatewaySpec, GatewayTlsSpec
from meshpilot.mesh.schema.policies import (
    MeshTracingSpec,
    MixerSpec,
    PolicyAction,
    PolicySpec,
    PolicyTargetSpec,
    TelemetrySpec,
)
from meshpilot.mesh.schema.routes import (
    DEFAULT_RETRIABLE_STATUS_CODES,
    DEFAULT_RETRY_ATTEMPTS,
    DEFAULT_RETRY_ON,
    BackoffSpec,
    CallerSpec,
    CorsSpec,
    DestinationSpec,
    DirectResponseSpec,
    FaultAbortSpec,
    FaultDelaySpec,
    FaultSpec,
    HeaderOpsSpec,
    HeadersSpec,
    MatchSpec,
    Method,
    MirrorSpec,
    RateLimitSpec,
    RedirectSpec,
    RegexRewriteSpec,
    RetriesSpec,
    RetryOn,
    RewriteSpec,
    RouteSpec,
    ValueMatch,
    ValueMatchSpec,
)
from meshpilot.mesh.schema.security import (
    CaFilesSpec,
    SecuritySpec,
    ServiceSecuritySpec,
)
from meshpilot.mesh.schema.services import (
    HASHING_POLICIES,
    CircuitBreakerSpec,
    CookieSpec,
    EndpointSpec,
    HashSpec,
    LbPolicy,
    LoadBalancer,
    LoadBalancerSpec,
    LocalityLbSpec,
    OutlierDetectionSpec,
    Protocol,
    ServiceSpec,
    TcpKeepaliveSpec,
    TlsSpec,
    TracingSpec,
    TrafficPolicySpec,
)

__all__ = [
    "DEFAULT_RETRIABLE_STATUS_CODES",
    "DEFAULT_RETRY_ATTEMPTS",
    "DEFAULT_RETRY_ON",
    "HASHING_POLICIES",
    "BackoffSpec",
    "CaFilesSpec",
    "CallerSpec",
    "CircuitBreakerSpec",
    "CookieSpec",
    "CorsSpec",
    "DefaultsSpec",
    "DestinationSpec",
    "DirectResponseSpec",
    "EndpointSpec",
    "FaultAbortSpec",
    "FaultDelaySpec",
    "FaultSpec",
    "GatewayRouteSpec",
    "GatewaySpec",
    "GatewayTlsSpec",
    "HashSpec",
    "HeaderOpsSpec",
    "HeadersSpec",
    "JwtHeaderSpec",
    "JwtRuleSpec",
    "LbPolicy",
    "LoadBalancer",
    "LoadBalancerSpec",
    "LocalityLbSpec",
    "MatchSpec",
    "MeshSpec",
    "MeshTracingSpec",
    "Method",
    "MirrorSpec",
    "MixerSpec",
    "OutlierDetectionSpec",
    "PolicyAction",
    "PolicySpec",
    "PolicyTargetSpec",
    "Protocol",
    "RateLimitSpec",
    "RedirectSpec",
    "RegexRewriteSpec",
    "RequestAuthenticationSpec",
    "RetriesSpec",
    "RetryOn",
    "RewriteSpec",
    "RouteSpec",
    "SecuritySpec",
    "ServiceSecuritySpec",
    "ServiceSpec",
    "TcpKeepaliveSpec",
    "TelemetrySpec",
    "TlsSpec",
    "TracingSpec",
    "TrafficPolicySpec",
    "ValueMatch",
    "ValueMatchSpec",
]


class DefaultsSpec(SpecModel):
    timeout: Duration | None = None
    retries: RetriesSpec | None = None


class MeshSpec(SpecModel):
    mesh: str = Field(min_length=1)
    defaults: DefaultsSpec | None = None
    services: dict[ServiceName, ServiceSpec] = Field(default_factory=dict)
    mixer: MixerSpec | None = None
    telemetry: TelemetrySpec | None = None
    policies: list[PolicySpec] = Field(default_factory=list)
    security: SecuritySpec = Field(default_factory=SecuritySpec)
    gateways: dict[ServiceName, GatewaySpec] = Field(default_factory=dict)
