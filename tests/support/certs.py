"""Workload credentials signed by a real CA, as the agent would hold them."""

from __future__ import annotations

import datetime as dt

import grpc

from meshpilot.identity.agent import Credentials, WorkloadKey
from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.spiffe import SpiffeId


def workload_credentials(
    ca: CertificateAuthority,
    service: str,
    ttl: dt.timedelta = dt.timedelta(hours=1),
    now: dt.datetime | None = None,
) -> Credentials:
    now = now or dt.datetime.now(dt.UTC)
    key = WorkloadKey()
    chain = ca.sign_csr(key.csr(), service, ttl, now=now).chain_pem
    return key.accept(chain, ca.fingerprint, SpiffeId(ca.trust_domain, service), now)


def client_credentials(
    anchor_pem: bytes, workload: Credentials | None = None
) -> grpc.ChannelCredentials:
    """A gRPC client trusting `anchor_pem`, presenting `workload`'s certificate if given."""
    if workload is None:
        return grpc.ssl_channel_credentials(root_certificates=anchor_pem)
    return grpc.ssl_channel_credentials(
        root_certificates=anchor_pem,
        private_key=workload.key_pem,
        certificate_chain=workload.chain_pem,
    )
