"""The xDS port's TLS certificate: the names it carries, and its renewal without a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from meshpilot.identity.agent import WorkloadKey
from meshpilot.identity.client import CertificateClient
from meshpilot.identity.tls import server_names, split_address
from tests.support.controlplane import running_control_plane

MESH = "mesh: demo\nservices: {reviews: {port: 9080}}\n"


@pytest.mark.parametrize(
    ("address", "dns", "ips"),
    [
        ("127.0.0.7:18000", [], ["127.0.0.7"]),
        ("[::1]:18000", [], ["::1"]),
        ("cp.mesh.example:18000", ["cp.mesh.example"], []),
    ],
)
def test_the_certificate_names_the_address(address: str, dns: list[str], ips: list[str]) -> None:
    assert server_names(address) == (dns, ips)


def test_a_wildcard_address_gets_loopback_and_the_host_name() -> None:
    dns, ips = server_names("0.0.0.0:18000")
    assert "localhost" in dns and len(dns) == 2
    assert ips == ["127.0.0.1", "::1"]


async def presented(address: str) -> x509.Certificate:
    """The leaf the server presents to a new connection (no verification: only looked at)."""
    pem = await asyncio.to_thread(ssl.get_server_certificate, split_address(address))
    return x509.load_pem_x509_certificate(pem.encode())


async def test_the_server_certificate_is_renewed_half_way(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path, MESH, state_dir=tmp_path / "s", tls=True) as plane:
        server = plane.server_certificate
        assert server is not None
        first = await presented(plane.ads.address)
        assert first == server.certificate
        sans = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        assert (await presented(plane.ads.address)).serial_number == first.serial_number

        # One issued 16 days ago (of 30): due, but still presented until the next handshake.
        server.clock = lambda: dt.datetime.now(dt.UTC) - dt.timedelta(days=16)
        server.renew()
        server.clock = lambda: dt.datetime.now(dt.UTC)
        second = await presented(plane.ads.address)
        assert second.serial_number != first.serial_number
        assert second.public_key() != first.public_key()
        assert second.not_valid_before_utc >= first.not_valid_before_utc
        assert server.certificate == second
        # A sidecar's new channel (pinned to the CA by its token) trusts the new certificate.
        assert plane.identity is not None
        client = CertificateClient(plane.ads.address, plane.identity.tokens.issue("reviews"))
        try:
            await client.sign(WorkloadKey())
        finally:
            await client.close()
