"""The agent's SDS server: a real gRPC server on a unix socket, read by a real gRPC client the
way Envoy reads it (request names, ACK, NACK), with credentials from a real CA."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.sds import SDS_SERVICE, SECRET_TYPE, SdsServer
from meshpilot.model.names import ROOT_SECRET, WORKLOAD_SECRET
from tests.support.wait import wait_for_async
from tests.test_agent import credentials

TIMEOUT_S = 5.0


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.open(tmp_path / "ca-state", "demo")


@pytest.fixture
async def sds(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[SdsServer]:
    server = SdsServer(tmp_path / "run" / "sds.sock", credentials(ca))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class SecretsStream:
    """One StreamSecrets call, as Envoy makes it."""

    def __init__(self, socket: Path) -> None:
        self.channel = grpc.aio.insecure_channel(f"unix:{socket}")
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        call = self.channel.stream_stream(
            f"/{SDS_SERVICE}/StreamSecrets",
            request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
        )
        self.call: Any = call(self._requests())

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await self.requests.get()

    def send(self, names: list[str], version: str = "", nonce: str = "", error: str = "") -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=SECRET_TYPE, resource_names=names, version_info=version, response_nonce=nonce
        )
        if error:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self.requests.put_nowait(request)

    async def receive(self) -> discovery_pb2.DiscoveryResponse:
        response: discovery_pb2.DiscoveryResponse = await asyncio.wait_for(
            self.call.read(), TIMEOUT_S
        )
        return response

    async def close(self) -> None:
        self.call.cancel()
        await self.channel.close()


def unpacked(response: discovery_pb2.DiscoveryResponse) -> dict[str, secret_pb2.Secret]:
    found = {}
    for packed in response.resources:
        secret = secret_pb2.Secret()
        packed.Unpack(secret)
        found[secret.name] = secret
    return found


async def test_serves_the_workload_certificate_and_the_trust_anchor(
    sds: SdsServer, ca: CertificateAuthority
) -> None:
    assert stat.S_IMODE(os.stat(sds.socket_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sds.socket_path.parent).st_mode) == 0o700
    stream = SecretsStream(sds.socket_path)
    try:
        stream.send([WORKLOAD_SECRET, ROOT_SECRET, "unknown"])
        secrets = unpacked(await stream.receive())
    finally:
        await stream.close()
    assert set(secrets) == {WORKLOAD_SECRET, ROOT_SECRET}  # nothing for an unknown name
    certificate = secrets[WORKLOAD_SECRET].tls_certificate
    leaf = x509.load_pem_x509_certificates(certificate.certificate_chain.inline_bytes)[0]
    key = serialization.load_pem_private_key(certificate.private_key.inline_bytes, None)
    assert key.public_key() == leaf.public_key()
    anchor = secrets[ROOT_SECRET].validation_context.trusted_ca.inline_bytes
    assert x509.load_pem_x509_certificate(anchor) == ca.trust_anchor


async def test_a_renewal_is_pushed_to_open_streams_and_nacks_are_recorded(
    sds: SdsServer, ca: CertificateAuthority
) -> None:
    stream = SecretsStream(sds.socket_path)
    try:
        stream.send([WORKLOAD_SECRET])
        first = await stream.receive()
        stream.send([WORKLOAD_SECRET], first.version_info, first.nonce)  # ACK: nothing new
        renewed = credentials(ca)
        sds.update(renewed)
        second = await stream.receive()
        stream.send([WORKLOAD_SECRET], first.version_info, second.nonce, "bad key")
        await wait_for_async(lambda: sds.nacks == ["bad key"], message="the NACK")
    finally:
        await stream.close()
    assert second.version_info != first.version_info
    chain = unpacked(second)[WORKLOAD_SECRET].tls_certificate.certificate_chain.inline_bytes
    assert chain == renewed.chain_pem
