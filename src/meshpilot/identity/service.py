"""The certificate service: a sidecar sends a CSR with its join token, the mesh CA signs it.

It is served on the control plane's xDS port, beside ADS (same gRPC server, same TLS). Method
`/meshpilot.identity.v1.CertificateService/CreateCertificate`, unary, shaped like Istio's
`IstioCertificateService/CreateCertificate`, but without protobuf (no suitable generated message
exists here): request and response are UTF-8 JSON objects.

- metadata: `authorization: Bearer <join token>` (required, in every mode);
- request: `{"csr": "<PEM CSR>"}`;
- response: `{"spiffe_id": "spiffe://TD/service/NAME", "certificate_chain": "<PEM: leaf, then
  the CA chain up to the trust anchor>", "trust_bundle": "<PEM: the trust anchor>"}`.

The token is verified (signature, mesh, expiry, revocation) at every call; the certificate names
the service the token grants, whatever the CSR asks for, and lives `security.certificate_ttl`.
Refusals: UNAUTHENTICATED for a missing or invalid token, INVALID_ARGUMENT for a request or CSR
that cannot be signed; each is logged and counted in
`meshpilot_certificate_requests_refused_total{reason}`, and each certificate signed in
`meshpilot_certificates_signed_total`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry, Counter

from meshpilot.identity.admission import Metadata, Refused, verified_grant
from meshpilot.identity.authority import MeshIdentity
from meshpilot.identity.errors import CaError, CsrRejected
from meshpilot.identity.spiffe import SpiffeId

log = logging.getLogger(__name__)

SERVICE = "meshpilot.identity.v1.CertificateService"
METHOD = "CreateCertificate"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
# A CSR is well under 1 KiB; anything much bigger is not one.
MAX_REQUEST_BYTES = 64 * 1024
_PEM = Encoding.PEM


@dataclass(frozen=True)
class CertificateResponse:
    spiffe_id: str
    certificate_chain: bytes
    trust_bundle: bytes


def encode_request(csr_pem: bytes) -> bytes:
    return json.dumps({"csr": csr_pem.decode()}).encode()


def decode_request(data: bytes) -> bytes:
    """The PEM CSR of a request; ValueError if the request is not one."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"request larger than {MAX_REQUEST_BYTES} bytes")
    body = json.loads(data)
    if not isinstance(body, dict) or not isinstance(body.get("csr"), str):
        raise ValueError('expected a JSON object {"csr": "<PEM>"}')
    csr: str = body["csr"]
    return csr.encode()


def encode_response(response: CertificateResponse) -> bytes:
    return json.dumps(
        {
            "spiffe_id": response.spiffe_id,
            "certificate_chain": response.certificate_chain.decode(),
            "trust_bundle": response.trust_bundle.decode(),
        }
    ).encode()


def decode_response(data: bytes) -> CertificateResponse:
    """ValueError if the response is not one."""
    body = json.loads(data)
    fields = ("spiffe_id", "certificate_chain", "trust_bundle")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields):
        raise ValueError(f"expected a JSON object with {', '.join(fields)}")
    return CertificateResponse(
        body["spiffe_id"], body["certificate_chain"].encode(), body["trust_bundle"].encode()
    )


class IdentityMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.signed = Counter(
            "meshpilot_certificates_signed",
            "Workload certificates signed by the certificate service",
            registry=registry,
        )
        self._refused = Counter(
            "meshpilot_certificate_requests_refused",
            "Certificate requests refused, by reason",
            ["reason"],
            registry=registry,
        )

    def refused(self, reason: str) -> None:
        self._refused.labels(reason).inc()


class CertificateService:
    """Signs CSRs for the identity a join token grants; `handler()` goes on a gRPC server."""

    def __init__(self, identity: MeshIdentity | None, metrics: IdentityMetrics) -> None:
        self.identity = identity  # None: not open (yet), every request is UNAVAILABLE
        self.metrics = metrics

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self._create_certificate, response_serializer=encode_response
        )
        return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})

    async def _create_certificate(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> CertificateResponse:
        peer = context.peer()
        try:
            return self.sign(request, context.invocation_metadata() or (), peer)
        except Refused as refused:
            self.metrics.refused(refused.reason)
            log.warning(
                "certificate request from %s refused (%s): %s",
                peer,
                refused.reason,
                refused.message,
            )
            await context.abort(refused.code, refused.message)
            raise  # abort raises; this line is never reached

    def sign(self, request: bytes, metadata: Metadata, peer: str = "") -> CertificateResponse:
        """The answer to `request` sent with `metadata` (the token), or Refused."""
        identity = self.identity
        grant = verified_grant(identity, metadata)
        assert identity is not None  # verified_grant refuses otherwise
        try:
            csr_pem = decode_request(request)
            issued = identity.ca.sign_csr(csr_pem, grant.service, identity.certificate_ttl)
        except (ValueError, CsrRejected) as err:
            message = f"token {grant.token_id}: {err}"
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad_csr", message) from None
        except CaError as err:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, "ca", str(err)) from None
        self.metrics.signed.inc()
        spiffe_id = SpiffeId(identity.ca.trust_domain, grant.service)
        log.info("signed %s for %s (token %s)", spiffe_id, peer, grant.token_id)
        anchor_pem = identity.ca.trust_anchor.public_bytes(_PEM)
        return CertificateResponse(spiffe_id.uri, issued.chain_pem, anchor_pem)
