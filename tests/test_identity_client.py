"""The agent's transport: a CSR and the join token over the control channel, the CA pinned by the
token, credentials written and renewed. A real control plane in-process, real TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshpilot.controlplane import ControlPlane
from meshpilot.identity.agent import CertificateRefused, Credentials
from meshpilot.identity.authority import MeshIdentity
from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.client import CertificateClient, IdentityAgent, SigningRefused
from meshpilot.identity.tls import UntrustedServer
from meshpilot.identity.tokens import TokenAuthority, read_token
from tests.support.controlplane import running_control_plane
from tests.support.wait import wait_for_async

MESH = "mesh: demo\nservices: {reviews: {port: 9080}}\nsecurity: {certificate_ttl: 60s}\n"
REVIEWS = "spiffe://demo/service/reviews"


@pytest.fixture(params=["tls", "insecure"])
async def plane(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[ControlPlane]:
    tls = request.param == "tls"
    async with running_control_plane(tmp_path, MESH, state_dir=tmp_path / "state", tls=tls) as cp:
        yield cp


def identity(plane: ControlPlane) -> MeshIdentity:
    assert plane.identity is not None
    return plane.identity


def client(plane: ControlPlane, token: str) -> CertificateClient:
    return CertificateClient(plane.ads.address, token, insecure=not plane.tls)


def observed(agent: IdentityAgent) -> list[Credentials]:
    """Every set of credentials the agent hands its observers, from now on."""
    seen: list[Credentials] = []
    agent.observers.append(seen.append)
    return seen


def published(seen: list[Credentials]) -> tuple[x509.Certificate, bytes, x509.Certificate]:
    """The certificate, key (PEM) and trust anchor of the last credentials observed."""
    leaf = x509.load_pem_x509_certificates(seen[-1].chain_pem)[0]
    return leaf, seen[-1].key_pem, seen[-1].anchor


def san(certificate: x509.Certificate) -> list[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


async def test_agent_obtains_and_hands_over_credentials(plane: ControlPlane) -> None:
    mesh = identity(plane)
    agent = IdentityAgent(client(plane, mesh.tokens.issue("reviews")))
    seen = observed(agent)
    try:
        credentials = await agent.renew()
    finally:
        await agent.client.close()
    leaf, key_pem, anchor = published(seen)
    assert leaf == credentials.certificate
    assert san(leaf) == [REVIEWS]
    assert anchor == mesh.ca.trust_anchor
    key = serialization.load_pem_private_key(key_pem, None)
    assert key.public_key() == leaf.public_key()
    assert plane.metrics.value("meshpilot_certificates_signed_total") == 1


async def test_agent_renews_when_its_clock_says_so(plane: ControlPlane) -> None:
    now = [dt.datetime.now(dt.UTC)]
    token = identity(plane).tokens.issue("reviews")
    agent = IdentityAgent(client(plane, token), lambda: now[0], lambda: 0.0)
    seen = observed(agent)
    running = asyncio.create_task(agent.run())
    try:
        await wait_for_async(lambda: agent.renewals == 1, message="the first certificate")
        first, first_key, _ = published(seen)
        assert agent.renew_at is not None
        # 60 s certificates, received now: due half-way (no jitter).
        assert agent.renew_at - now[0] == (first.not_valid_after_utc - now[0]) / 2
        now[0] = agent.renew_at
        agent.wake()
        await wait_for_async(lambda: agent.renewals == 2, message="the renewal")
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await agent.client.close()
    second, second_key, _ = published(seen)
    assert second.serial_number != first.serial_number
    assert second_key != first_key  # a new key each time
    assert san(second) == [REVIEWS]


async def test_a_wrong_ca_pin_is_refused(plane: ControlPlane, tmp_path: Path) -> None:
    """A token pinning another CA (here: valid for the control plane, wrong pin) makes the agent
    refuse the control plane: at the TLS handshake, or (plaintext) the chain it signed."""
    rogue = CertificateAuthority.open(tmp_path / "rogue", "demo")
    token = TokenAuthority.open(tmp_path / "state", "demo", rogue.fingerprint).issue("reviews")
    agent = IdentityAgent(client(plane, token))
    seen = observed(agent)
    expected = UntrustedServer if plane.tls else CertificateRefused
    try:
        with pytest.raises(expected, match="pin"):
            await agent.renew()
    finally:
        await agent.client.close()
    assert not seen
    signed = plane.metrics.value("meshpilot_certificates_signed_total")
    assert signed == (0 if plane.tls else 1)  # over TLS the CSR never left the agent


async def test_a_refusal_reaches_the_agent(plane: ControlPlane) -> None:
    mesh = identity(plane)
    token = mesh.tokens.issue("reviews")
    mesh.tokens.revoke(read_token(token).token_id)
    agent = IdentityAgent(client(plane, token))
    try:
        with pytest.raises(SigningRefused, match="revoked") as raised:
            await agent.renew()
    finally:
        await agent.client.close()
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert agent.credentials is None


async def test_the_agent_retries_until_the_control_plane_can_sign(tmp_path: Path) -> None:
    """No usable mesh file yet (no CA): UNAVAILABLE, retried; signed once the file is fixed."""
    state = tmp_path / "state"
    async with running_control_plane(tmp_path, "mesh: demo\nservices: 3\n", state_dir=state) as cp:
        authority = TokenAuthority.open(
            state, "demo", CertificateAuthority.open(state, "demo").fingerprint
        )
        agent = IdentityAgent(client(cp, authority.issue("reviews")))
        seen = observed(agent)
        running = asyncio.create_task(agent.run())
        try:
            await wait_for_async(lambda: agent.failures >= 1, message="a refused attempt")
            assert agent.renewals == 0
            cp.mesh_path.write_text(MESH)
            await cp.reload()
            agent.wake()  # instead of waiting for the retry delay
            await wait_for_async(lambda: agent.renewals == 1, message="the certificate")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await agent.client.close()
    assert san(published(seen)[0]) == [REVIEWS]


async def test_an_agent_whose_first_replica_is_gone_is_certified_by_the_next(
    plane: ControlPlane,
) -> None:
    with socket.socket() as closed:  # a port that nothing listens on once closed
        closed.bind(("127.0.0.1", 0))
        gone = f"127.0.0.1:{closed.getsockname()[1]}"
    token = identity(plane).tokens.issue("reviews")
    to_both = CertificateClient(gone, token, insecure=not plane.tls, fallbacks=[plane.ads.address])
    agent = IdentityAgent(to_both)
    try:
        async with asyncio.timeout(10):  # without the fallback it would retry the gone one
            credentials = await agent.first_credentials()
    finally:
        await to_both.close()
    assert to_both.address == plane.ads.address
    assert san(credentials.certificate) == [REVIEWS]
