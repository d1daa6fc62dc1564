"""The jwt_authn filter for a service's `request_authentication`, first in the inbound chain so
that every policy sees the verified token's payload (dynamic metadata, `names.JWT_PAYLOAD`).

As Istio does it: a request with a token that fails verification gets `401`; one without a token
passes (policies with `request_principals` or `claims` decide what it may do).
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2
from google.protobuf import empty_pb2

from meshpilot.model import ir, names
from meshpilot.translator.envoy.filter_plugin import INBOUND, FilterContext, HttpFilter


def jwt_provider(provider: ir.JwtProvider) -> config_pb2.JwtProvider:
    return config_pb2.JwtProvider(
        issuer=provider.issuer,
        audiences=provider.audiences,
        local_jwks=base_pb2.DataSource(inline_string=provider.jwks),
        forward=provider.forward,
        from_headers=[
            config_pb2.JwtHeader(name=h.name, value_prefix=h.prefix) for h in provider.from_headers
        ],
        from_params=provider.from_params,
        payload_in_metadata=names.JWT_PAYLOAD,
    )


def jwt_authentication(providers: tuple[ir.JwtProvider, ...]) -> config_pb2.JwtAuthentication:
    """One provider per issuer (named by it); every request needs a valid token of any of them,
    or none at all."""
    requirements = [config_pb2.JwtRequirement(provider_name=p.issuer) for p in providers]
    requirements.append(config_pb2.JwtRequirement(allow_missing=empty_pb2.Empty()))
    any_valid_or_none = config_pb2.JwtRequirement(
        requires_any=config_pb2.JwtRequirementOrList(requirements=requirements)
    )
    every_request = route_components_pb2.RouteMatch(prefix="/")
    return config_pb2.JwtAuthentication(
        providers={p.issuer: jwt_provider(p) for p in providers},
        rules=[config_pb2.RequirementRule(match=every_request, requires=any_valid_or_none)],
    )


def _config(context: FilterContext) -> config_pb2.JwtAuthentication | None:
    service = context.service
    return jwt_authentication(service.jwt) if service is not None and service.jwt else None


FILTER = HttpFilter(names.JWT_FILTER, INBOUND, _config)
