"""A minimal ADS client that speaks to the control plane like an Envoy sidecar would.

Used by tests to drive the protocol precisely (ACK, NACK, stale nonces) and by benchmarks to
simulate thousands of sidecars without running thousands of Envoys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from meshpilot.identity.admission import AUTHORIZATION, BEARER
from meshpilot.model import proxies


def sidecar_node(proxy: proxies.Proxy) -> base_pb2.Node:
    metadata = struct_pb2.Struct()
    metadata.update(
        {
            "service": proxy.service,
            "ip": proxy.ip,
            "app_port": proxy.app_port,
            "labels": dict(proxy.labels),
        }
    )
    if proxy.proxyless:
        metadata.update({"proxyless": True})
    return base_pb2.Node(id=proxy.node_id, cluster=proxy.service, metadata=metadata)


class AdsClient:
    """An open ADS stream: `send` requests, `receive` responses (async context manager);
    plaintext, or TLS with `credentials`; with a join `token` as a secure sidecar sends it."""

    def __init__(
        self,
        address: str,
        node: base_pb2.Node,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
    ) -> None:
        self.address = address
        self.node = node
        self.credentials = credentials
        self.metadata = () if token is None else ((AUTHORIZATION, BEARER + token),)
        self._outbox: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._inbox: asyncio.Queue[discovery_pb2.DiscoveryResponse | BaseException] = (
            asyncio.Queue()
        )
        self._channel: grpc.aio.Channel | None = None
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._node_sent = False

    async def __aenter__(self) -> AdsClient:
        if self.credentials is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        else:
            self._channel = grpc.aio.secure_channel(self.address, self.credentials)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self._channel)
        self._call = self._open(stub)
        self._reader = asyncio.create_task(self._read_responses())
        return self

    def _open(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> Any:
        return stub.StreamAggregatedResources(self._requests(), metadata=self.metadata)

    async def _read_responses(self) -> None:
        """Queue the responses: waiting for one with a timeout must never cancel the call."""
        try:
            while (response := await self._call.read()) is not grpc.aio.EOF:
                self._inbox.put_nowait(response)
            self._inbox.put_nowait(ConnectionError("the control plane closed the stream"))
        except grpc.aio.AioRpcError as err:
            self._inbox.put_nowait(err)

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._outbox.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _requests(self) -> Any:
        while (request := await self._outbox.get()) is not None:
            yield request

    def send(
        self,
        type_url: str,
        names: Iterable[str] = (),
        version: str = "",
        nonce: str = "",
        error: str | None = None,
    ) -> None:
        request = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=list(names),
            version_info=version,
            response_nonce=nonce,
        )
        self._queue(request, error)

    def _queue(self, request: Any, error: str | None) -> None:
        """Send `request` (either protocol's), with the node on the first and `error` as a
        NACK's error detail."""
        if not self._node_sent:
            request.node.CopyFrom(self.node)
            self._node_sent = True
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        self._outbox.put_nowait(request)

    async def receive(self, timeout: float = 5.0) -> discovery_pb2.DiscoveryResponse:
        """The next response; raises TimeoutError, or the error that ended the stream."""
        item = await asyncio.wait_for(self._inbox.get(), timeout)
        if isinstance(item, BaseException):
            self._inbox.put_nowait(item)
            raise item
        return item

    async def fetch(
        self, type_url: str, names: Sequence[str] = (), version: str = ""
    ) -> discovery_pb2.DiscoveryResponse:
        """Ask for `names` of `type_url` and ACK the response, as a sidecar does; the response."""
        self.send(type_url, names, version)
        response = await self.receive()
        self.ack(response, names)
        return response

    def ack(self, response: discovery_pb2.DiscoveryResponse, names: Iterable[str] = ()) -> None:
        self.send(response.type_url, names, response.version_info, response.nonce)

    def nack(
        self,
        response: discovery_pb2.DiscoveryResponse,
        error: str,
        version: str = "",
        names: Iterable[str] = (),
    ) -> None:
        """Reject `response`; `version` is the last version this client accepted."""
        self.send(response.type_url, names, version, response.nonce, error)


class DeltaClient(AdsClient):
    """An incremental ADS stream (DeltaAggregatedResources), as a delta Envoy opens it."""

    def _open(self, stub: ads_pb2_grpc.AggregatedDiscoveryServiceStub) -> Any:
        return stub.DeltaAggregatedResources(self._requests(), metadata=self.metadata)

    def request(
        self,
        type_url: str,
        subscribe: Iterable[str] = (),
        unsubscribe: Iterable[str] = (),
        nonce: str = "",
        error: str | None = None,
        initial: dict[str, str] | None = None,
    ) -> None:
        request = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
            initial_resource_versions=initial or {},
        )
        self._queue(request, error)

    async def receive_delta(self, timeout: float = 5.0) -> discovery_pb2.DeltaDiscoveryResponse:
        response: Any = await self.receive(timeout)
        return response

    def ack_delta(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        self.request(response.type_url, nonce=response.nonce)

    def nack_delta(self, response: discovery_pb2.DeltaDiscoveryResponse, error: str) -> None:
        self.request(response.type_url, nonce=response.nonce, error=error)
