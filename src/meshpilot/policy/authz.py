"""`envoy.service.auth.v3.Authorization`: Envoy's ext_authz checks, decided by custom policies."""

from __future__ import annotations

from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2

from meshpilot import identity
from meshpilot.identity.spiffe import service_of
from meshpilot.model import names
from meshpilot.policy.decision import Decision, Request
from meshpilot.policy.engine import CustomPolicies

_OVERWRITE = base_pb2.HeaderValueOption.HeaderAppendAction.Value("OVERWRITE_IF_EXISTS_OR_ADD")


def request_of(
    check: external_auth_pb2.CheckRequest, destination: str, trust_domain: str | None = None
) -> Request:
    """The hook's view of a check: the source is the service the caller's mTLS certificate
    names (Envoy passes it as the source principal), never what a header says."""
    http = check.attributes.request.http
    headers = dict(http.headers)
    path, _, query = http.path.partition("?")
    source = service_of(check.attributes.source.principal, trust_domain) if trust_domain else None
    claims = verified_claims(check.attributes.metadata_context)
    return Request(source, destination, http.method, path, headers, query, claims)


def verified_claims(metadata: base_pb2.Metadata) -> dict[str, Any]:
    """The payload of the token the sidecar verified (jwt_authn's dynamic metadata, sent when
    the service verifies tokens); {} without one. JSON numbers come as floats: whole ones are
    given back as ints (`exp`, `iat`)."""
    verified = metadata.filter_metadata.get(names.JWT_FILTER)
    if verified is None or names.JWT_PAYLOAD not in verified.fields:
        return {}
    payload = verified.fields[names.JWT_PAYLOAD]
    if payload.WhichOneof("kind") != "struct_value":
        return {}
    return {k: _whole(v) for k, v in json_format.MessageToDict(payload.struct_value).items()}


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole(v) for v in value]
    if isinstance(value, dict):
        return {k: _whole(v) for k, v in value.items()}
    return value


def _header_options(headers: dict[str, str] | Any) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=k, value=v), append_action=_OVERWRITE
        )
        for k, v in headers.items()
    ]


def check_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    if decision.allow:
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(headers=_header_options(decision.headers)),
        )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.status),
            headers=_header_options(decision.headers),
            body=decision.body,
        ),
    )


class AuthorizationService:
    """Registered with `add_AuthorizationServicer_to_server`."""

    def __init__(self, policies: CustomPolicies) -> None:
        self.policies = policies

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> external_auth_pb2.CheckResponse:
        metadata = dict(context.invocation_metadata() or ())
        destination = str(metadata.get(identity.DESTINATION_METADATA, ""))
        checked = request_of(request, destination, self.policies.trust_domain)
        decision = await self.policies.decide(checked)
        return check_response(decision)
