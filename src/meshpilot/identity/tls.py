"""TLS of the control channel (the xDS port: ADS and the certificate service), both ends.

Server: a key and a serverAuth certificate from the mesh CA naming the address the port listens
on (an IP SAN for an IP, a DNS SAN for a name; a wildcard address gets loopback and the host
name), presented with the CA chain up to the trust anchor. It lives SERVER_TTL and is replaced,
with a new key, once half of that has passed: gRPC asks `ServerCertificate.fetch` before every
handshake (dynamic SSL server credentials), so new connections get the new one without a
restart.

Client: a join token pins the CA by the SHA-256 fingerprint of its trust anchor, but gRPC wants the
anchor's certificate. `pinned_anchor` makes one TLS handshake without verification, only to read
the chain the server presents, and keeps the certificate whose fingerprint equals the pin (a
forger would need a SHA-256 preimage); nothing else of that handshake is trusted and the
connection is closed. The gRPC channel is then opened with that anchor as its only root, so gRPC
verifies the server's chain and name as usual.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
from collections.abc import Callable
from ipaddress import ip_address

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshpilot.identity.ca import CertificateAuthority, certificate_fingerprint
from meshpilot.identity.errors import IdentityError

Clock = Callable[[], dt.datetime]
log = logging.getLogger(__name__)
SERVER_TTL = dt.timedelta(days=30)
_WILDCARDS = {"0.0.0.0", "::", ""}
PROBE_TIMEOUT_S = 5.0


class UntrustedServer(IdentityError):
    """The control plane did not present the CA the join token pins."""


class ControlPlaneUnreachable(UntrustedServer):
    """No TLS connection to the control plane at all (not up yet, say): worth retrying."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def server_names(address: str) -> tuple[list[str], list[str]]:
    """(DNS names, IPs) a server certificate for `address` names."""
    host, _ = split_address(address)
    if host in _WILDCARDS:
        return ["localhost", socket.gethostname()], ["127.0.0.1", "::1"]
    try:
        ip_address(host)
    except ValueError:
        return [host], []
    return [], [host]


class ServerCertificate:
    """The xDS port's certificate, renewed half-way through its life (by `clock`)."""

    def __init__(self, ca: CertificateAuthority, address: str, clock: Clock = utc_now) -> None:
        self.ca = ca
        self.dns_names, self.ips = server_names(address)
        self.clock = clock
        self.certificate, self._configuration = self._issue()

    def _issue(self) -> tuple[x509.Certificate, grpc.ServerCertificateConfiguration]:
        issued = self.ca.server_certificate(self.dns_names, self.ips, SERVER_TTL, self.clock())
        pair = [(issued.key_pem, issued.chain_pem)]
        return issued.certificate, grpc.ssl_server_certificate_configuration(pair)

    @property
    def renew_at(self) -> dt.datetime:
        start = self.certificate.not_valid_before_utc
        return start + (self.certificate.not_valid_after_utc - start) / 2

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's question before each handshake: a new configuration, or None to keep it."""
        if self.clock() < self.renew_at:
            return None
        self.renew()
        return self._configuration

    def renew(self) -> None:
        """A new key and certificate, from now (by `clock`), for the next handshakes."""
        self.certificate, self._configuration = self._issue()
        expires = self.certificate.not_valid_after_utc
        log.info("xDS port certificate renewed, valid until %s", expires)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._configuration, self.fetch)


def pinned_anchor(address: str, fingerprint: str) -> bytes:
    """The PEM trust anchor the server at `address` presents, if its fingerprint is the pin.
    Blocking (one TLS handshake)."""
    host, port = split_address(address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only reads the chain; trust comes from the pin
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=host or None) as tls,
        ):
            chain = _presented_chain(tls)
    except ssl.SSLError as err:
        raise UntrustedServer(f"cannot read the TLS certificates of {address}: {err}") from None
    except OSError as err:
        raise ControlPlaneUnreachable(
            f"cannot reach the control plane at {address}: {err}"
        ) from None
    for der in chain:
        certificate = x509.load_der_x509_certificate(der)
        if certificate_fingerprint(certificate) == fingerprint:
            return certificate.public_bytes(serialization.Encoding.PEM)
    raise UntrustedServer(f"{address} does not present the CA the join token pins ({fingerprint})")


def _presented_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The DER certificates the peer sent, unverified."""
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    if public is not None:
        return list(public())
    # Before 3.13 only the SSL object has it, returning certificate objects.
    sslobj = tls._sslobj  # type: ignore[attr-defined]
    der = ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]
    return [cert.public_bytes(der) for cert in sslobj.get_unverified_chain()]
