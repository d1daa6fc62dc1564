"""The agent's SDS server: Envoy's workload certificate and trust anchor, over a local socket.

Istio's design: the sidecar agent, not the control plane, serves SDS to its Envoy on a unix
socket (mode 0600 in a 0700 directory), so the private key never crosses the network and never
lands on disk. State of the world, two secrets (`model/names.py`): WORKLOAD_SECRET (certificate
chain and key) and ROOT_SECRET (the mesh trust anchor). Each renewal is pushed at once to every
open stream; Envoy uses the new certificate for new connections, and open ones carry on.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from meshpilot.identity.agent import Credentials
from meshpilot.model import names

log = logging.getLogger(__name__)

SDS_SERVICE = "envoy.service.secret.v3.SecretDiscoveryService"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SOCKET_NAME = "sds.sock"


def secrets(credentials: Credentials) -> dict[str, secret_pb2.Secret]:
    """The secrets Envoy may ask for, by name."""
    return {
        names.WORKLOAD_SECRET: secret_pb2.Secret(
            name=names.WORKLOAD_SECRET,
            tls_certificate=common_pb2.TlsCertificate(
                certificate_chain=base_pb2.DataSource(inline_bytes=credentials.chain_pem),
                private_key=base_pb2.DataSource(inline_bytes=credentials.key_pem),
            ),
        ),
        names.ROOT_SECRET: secret_pb2.Secret(
            name=names.ROOT_SECRET,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_bytes=credentials.anchor_pem)
            ),
        ),
    }


class SdsServer:
    """Component: `await start()`, `update(credentials)` on each renewal, `await stop()`."""

    def __init__(self, socket_path: Path, credentials: Credentials) -> None:
        self.socket_path = socket_path
        self._secrets = secrets(credentials)
        self._version = 1
        self._streams: set[asyncio.Event] = set()
        self._server: grpc.aio.Server | None = None
        self.nacks: list[str] = []  # Envoy's error for each rejected response, oldest first

    @property
    def version(self) -> str:
        return str(self._version)

    async def start(self) -> None:
        self.socket_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_path.parent.chmod(0o700)
        server = grpc.aio.server()
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SDS_SERVICE, {"StreamSecrets": handler})]
        )
        if server.add_insecure_port(f"unix:{self.socket_path}") == 0:
            raise OSError(f"cannot listen for SDS on {self.socket_path}")
        await server.start()
        self.socket_path.chmod(0o600)
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None

    def update(self, credentials: Credentials) -> None:
        """New credentials: a new version, pushed to every open stream."""
        self._secrets = secrets(credentials)
        self._version += 1
        for wakeup in self._streams:
            wakeup.set()

    async def _stream(self, _requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """Answer each new set of names at once, and push every new version."""
        wakeup = asyncio.Event()
        wanted: list[list[str]] = [[]]
        reader = asyncio.create_task(self._read(context, wanted, wakeup))
        self._streams.add(wakeup)
        sent: tuple[str, tuple[str, ...]] | None = None
        try:
            while not reader.done():
                await _either(wakeup.wait(), reader)
                wakeup.clear()
                current = (self.version, tuple(wanted[0]))
                if not reader.done() and current != sent:
                    await context.write(self._response(wanted[0]))
                    sent = current
        finally:
            self._streams.discard(wakeup)
            reader.cancel()

    async def _read(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        wanted: list[list[str]],
        wakeup: asyncio.Event,
    ) -> None:
        try:
            while (request := await context.read()) is not grpc.aio.EOF:
                if request.HasField("error_detail"):
                    self.nacks.append(request.error_detail.message)
                    log.error("Envoy rejected its secrets: %s", request.error_detail.message)
                wanted[0] = list(request.resource_names)
                wakeup.set()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as err:
            log.debug("SDS stream ended: %s", err)

    def _response(self, wanted: list[str]) -> discovery_pb2.DiscoveryResponse:
        resources = []
        for name in wanted:
            if name in self._secrets:
                packed = any_pb2.Any()
                packed.Pack(self._secrets[name])
                resources.append(packed)
        return discovery_pb2.DiscoveryResponse(
            version_info=self.version,
            resources=resources,
            type_url=SECRET_TYPE,
            nonce=f"{self.version}-{len(resources)}",
        )


async def _either(wait: Any, task: asyncio.Task[None]) -> None:
    """Until `wait` (a coroutine) completes or `task` ends."""
    waiter = asyncio.ensure_future(wait)
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
