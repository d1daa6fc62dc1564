"""The sidecar's side of workload identity (istio-agent's job): its key, its CSR, checking what the
control plane signed, and when to renew.

The private key is made here and never leaves the instance: only the CSR travels. What comes back
is checked before use: the chain must lead to the CA the join token pins (by fingerprint), the
leaf must hold this key and exactly the SPIFFE ID asked for. Credentials stay in memory: Envoy
gets them over SDS on a local socket (`sds.py`), never from a file.

Transport (asking the control plane to sign, renewing) is in `client.py`.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshpilot.identity.ca import certificate_fingerprint
from meshpilot.identity.errors import IdentityError
from meshpilot.identity.spiffe import SpiffeId

# Renew at about half the lifetime, earlier by up to a tenth of it so that sidecars started
# together do not all renew at the same moment.
RENEW_AT = 0.5
JITTER = 0.1


class CertificateRefused(IdentityError):
    """What the control plane sent back cannot be used as this workload's certificate."""


@dataclass(frozen=True)
class Credentials:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain_pem: bytes
    anchor: x509.Certificate
    received_at: dt.datetime

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def anchor_pem(self) -> bytes:
        return self.anchor.public_bytes(serialization.Encoding.PEM)


class WorkloadKey:
    """An ECDSA P-256 key made on this instance, and CSRs for it."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())

    def csr(self) -> bytes:
        """A CSR: only its key and signature matter, the CA decides the name."""
        builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def accept(
        self,
        chain_pem: bytes,
        anchor_fingerprint: str,
        spiffe_id: SpiffeId,
        now: dt.datetime | None = None,
    ) -> Credentials:
        """Check a signed chain against the pinned CA and this key; the credentials if good."""
        now = now or dt.datetime.now(dt.UTC)
        try:
            leaf, *rest = x509.load_pem_x509_certificates(chain_pem)
        except ValueError:
            raise CertificateRefused("the control plane sent no PEM certificate chain") from None
        anchors = [c for c in rest if certificate_fingerprint(c) == anchor_fingerprint]
        if not anchors:
            raise CertificateRefused(
                f"the chain does not lead to the pinned CA ({anchor_fingerprint})"
            )
        if leaf.public_key() != self.key.public_key():
            raise CertificateRefused("the certificate is not for this instance's key")
        verifier = PolicyBuilder().store(Store(anchors)).time(now).build_client_verifier()
        try:
            verified = verifier.verify(leaf, rest)
        except VerificationError as err:
            raise CertificateRefused(f"the certificate does not verify: {err}") from None
        if list(verified.subjects or []) != [x509.UniformResourceIdentifier(spiffe_id.uri)]:
            raise CertificateRefused(f"the certificate does not name exactly {spiffe_id}")
        return Credentials(self.key, leaf, chain_pem, anchors[0], now)


def renewal_time(
    credentials: Credentials, jitter: Callable[[], float] = random.random
) -> dt.datetime:
    """When to ask for the next certificate: about half-way from receipt to expiry."""
    remaining = credentials.certificate.not_valid_after_utc - credentials.received_at
    return credentials.received_at + remaining * (RENEW_AT - JITTER * jitter())
