"""A Python gRPC server with a workload certificate (the mixer): mTLS that accepts only clients
with a certificate of the mesh CA, renewed without a restart.

gRPC asks `_fetch` at each new handshake; it answers with the agent's newest credentials once
after each renewal (None: keep the current ones), so renewal reaches new connections while open
ones carry on. The peer's service comes from its certificate's URI SAN.
"""

from __future__ import annotations

import threading
from typing import Any

import grpc

from meshpilot.identity.agent import Credentials
from meshpilot.identity.spiffe import service_of

_SAN = "x509_subject_alternative_name"


class WorkloadServerCredentials:
    """Server credentials starting with `first`; `renewed` (an agent's observer) swaps them."""

    def __init__(self, first: Credentials) -> None:
        self._lock = threading.Lock()
        self._newer: Credentials | None = None
        self._first = first

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._first), self._fetch, require_client_authentication=True
        )

    def renewed(self, credentials: Credentials) -> None:
        with self._lock:
            self._newer = credentials

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            newer, self._newer = self._newer, None
        return _configuration(newer) if newer is not None else None


def _configuration(credentials: Credentials) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(credentials.key_pem, credentials.chain_pem)], root_certificates=credentials.anchor_pem
    )


def peer_service(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The service named by the SPIFFE ID of the peer's verified certificate (None: plaintext,
    or no workload ID)."""
    for san in (context.auth_context() or {}).get(_SAN, ()):
        found = service_of(san.decode("utf-8", "replace"))
        if found is not None:
            return found
    return None
