"""The ADS gRPC server: accepts sidecar streams and drives an AdsStream for each.

Responses are written as pre-built bytes (identity serializer), so a push costs a write of
cached resource bytes plus a nonce, never a re-serialization.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.xds.cache import SnapshotCache, Watch
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.node import BadNode, proxy_from_node
from meshpilot.xds.stream import AdsStream

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
_END = object()
MAX_CONCURRENT_PUSHES = 64


class AdsServer:
    """Component: `await start()`, `await stop()`."""

    def __init__(self, cache: SnapshotCache, metrics: XdsMetrics, address: str) -> None:
        self.cache = cache
        self.metrics = metrics
        self.address = address
        self._server: grpc.aio.Server | None = None
        # A state-of-the-world push is a full copy of a proxy's resources; after a change every
        # stream wants to push at once. Bounding how many build and write at the same time
        # bounds the memory those copies take (and lets ACKs in between).
        self._pushing = asyncio.Semaphore(MAX_CONCURRENT_PUSHES)

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.max_send_message_length", 512 * 1024 * 1024),
            ]
        )
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    ADS_SERVICE, {"StreamAggregatedResources": handler}
                )
            ]
        )
        if server.add_insecure_port(self.address) == 0:
            raise OSError(f"cannot listen for xDS on {self.address}")
        await server.start()
        self._server = server
        log.info("ADS server listening on %s", self.address)

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def _stream(self, _requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        try:
            proxy = proxy_from_node(first.node)
        except BadNode as err:
            log.warning("rejecting ADS stream: %s", err)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        watch = self.cache.connect(proxy)
        log.info("proxy connected: %s (%s %s)", proxy.node_id, proxy.service, proxy.ip)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        inbox.put_nowait(first)
        watch.wakeup.set()
        reader = asyncio.create_task(_read_requests(context, inbox, watch))
        try:
            await self._serve(AdsStream(watch, self.metrics), context, inbox)
        finally:
            reader.cancel()
            self.cache.disconnect(watch)
            log.info("proxy disconnected: %s", proxy.node_id)

    async def _serve(
        self,
        stream: AdsStream,
        context: grpc.aio.ServicerContext[Any, Any],
        inbox: asyncio.Queue[Any],
    ) -> None:
        while True:
            await stream.watch.wakeup.wait()
            stream.watch.wakeup.clear()
            while not inbox.empty():
                request = inbox.get_nowait()
                if request is _END:
                    return
                stream.handle_request(request)
            async with self._pushing:
                started = time.perf_counter()
                responses = stream.next_responses()
                for response in responses:
                    await context.write(response)
            if responses:
                self.metrics.push_seconds.observe(time.perf_counter() - started)


async def _read_requests(
    context: grpc.aio.ServicerContext[Any, Any], inbox: asyncio.Queue[Any], watch: Watch
) -> None:
    """Move requests into the inbox and wake the stream; a broken stream reads as its end."""
    try:
        while (request := await context.read()) is not grpc.aio.EOF:
            inbox.put_nowait(request)
            watch.wakeup.set()
    except (grpc.aio.AioRpcError, grpc.RpcError, asyncio.InvalidStateError) as err:
        log.debug("ADS stream of %s ended: %s", watch.proxy.node_id, err)
    inbox.put_nowait(_END)
    watch.wakeup.set()
