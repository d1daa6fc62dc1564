"""The ADS gRPC server: accepts sidecar streams and drives a protocol stream for each.

Responses are written as pre-built bytes (identity serializer), so a push costs a write of
cached resource bytes plus a nonce, never a re-serialization.

Other services of the control plane's xDS port (the certificate service) are passed to
`start` as generic handlers; with `credentials` the port speaks TLS, else plaintext. With an
`admit` check (a secure control plane: identity/admission.py), a stream is served only if its
first request's node passes it with the stream's metadata and peer address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.identity.admission import Metadata, Refused
from meshpilot.model.proxies import Proxy
from meshpilot.xds.cache import SnapshotCache, Watch
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.node import BadNode, proxy_from_node
from meshpilot.xds.protocol import ProtocolStream
from meshpilot.xds.sotw.stream import SotwStream, StreamShared, new_types

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# Streams that may have responses in flight at once (see AdsServer._serve).
MAX_STREAMS_PUSHING = 64
# A proxy that does not answer a response for this long lets another stream push meanwhile.
PERMIT_HOLD_S = 5.0
# gRPC cancels new streams beyond this many waiting to be accepted (its defaults: 1,000 and
# 3,000); thousands of sidecars reconnect at once after a restart, and are all to be accepted.
MAX_PENDING_STREAMS = 100_000

# Raises identity.admission.Refused for a proxy that may not join (metadata, gRPC peer); else
# returns what to call when its stream ends (or None).
Admit = Callable[[Proxy, Metadata, str], Callable[[], None] | None]


class AdsServer:
    """Component: `await start()`, `await stop()`."""

    def __init__(
        self, cache: SnapshotCache, metrics: XdsMetrics, address: str, admit: Admit | None = None
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.address = address
        self.admit = admit
        self._server: grpc.aio.Server | None = None
        self._shared = StreamShared()
        # A state-of-the-world push is a full copy of a proxy's resources, and gRPC only queues
        # a write: the copy lives until the proxy has read it. After a change every stream
        # wants to push at once, so a stream pushes only while it holds a permit, from its first
        # response until the proxy has answered all of them: the permits bound the copies in
        # memory, and a slow proxy delays only itself.
        self._permits = _Permits(MAX_STREAMS_PUSHING, metrics)

    async def start(
        self,
        handlers: Sequence[grpc.GenericRpcHandler] = (),
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.max_send_message_length", 512 * 1024 * 1024),
                ("grpc.server.max_pending_requests", MAX_PENDING_STREAMS),
                ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_STREAMS),
            ]
        )
        handler = grpc.stream_stream_rpc_method_handler(
            self._stream, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
        )
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    ADS_SERVICE, {"StreamAggregatedResources": handler}
                ),
                *handlers,
            ]
        )
        if credentials is None:
            port = server.add_insecure_port(self.address)
        else:
            port = server.add_secure_port(self.address, credentials)
        if port == 0:
            raise OSError(f"cannot listen for xDS on {self.address}")
        await server.start()
        self._server = server
        transport = "plaintext" if credentials is None else "TLS"
        log.info("ADS server listening on %s (%s)", self.address, transport)

    async def stop(self, grace: float = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def _stream(self, _requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        try:
            proxy, leave = self._admitted(first, context)
        except Refused as refused:
            self.metrics.streams_refused.labels(refused.reason).inc()
            log.warning("refusing ADS stream from %s: %s", context.peer(), refused.message)
            await context.abort(refused.code, refused.message)
        types = new_types()
        watch = self.cache.connect(proxy, types)
        log.info("proxy connected: %s (%s %s)", proxy.node_id, proxy.service, proxy.ip)
        stream = SotwStream(watch, types, self.metrics, self._shared)
        stream.handle_request(first)
        del first  # a request can hold thousands of names: none is kept past its handling
        reader = asyncio.create_task(_read_requests(context, stream, watch))
        try:
            await self._serve(stream, watch, context)
            if reader.done() and not reader.cancelled():
                reader.result()  # a request that could not be handled fails the stream
        finally:
            reader.cancel()
            stream.close()
            self.cache.disconnect(watch)
            if leave is not None:
                leave()
            log.info("proxy disconnected: %s", proxy.node_id)

    def _admitted(
        self, first: discovery_pb2.DiscoveryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[Proxy, Callable[[], None] | None]:
        """The proxy the first request's node describes, if it may join, and what to call when
        its stream ends; else Refused."""
        try:
            proxy = proxy_from_node(first.node)
        except BadNode as err:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad_node", str(err)) from None
        if self.admit is None:
            return proxy, None
        return proxy, self.admit(proxy, context.invocation_metadata() or (), context.peer())

    async def _serve(
        self,
        stream: ProtocolStream[Any],
        watch: Watch,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        permit = _Permit(self._permits)
        try:
            while not stream.ended:
                if not await _woken(watch, PERMIT_HOLD_S if permit.held else None):
                    permit.release()  # no answer in time: let others push meanwhile
                    continue
                if not stream.in_flight:
                    permit.release()  # acquired again below, behind the streams waiting
                if not stream.ended and stream.wants_push():
                    await permit.acquire()
                    await self._push(stream, context)
                    if not stream.in_flight:
                        permit.release()  # all held back until other types are ACKed
        finally:
            permit.release()

    async def _push(
        self, stream: ProtocolStream[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> None:
        started = time.perf_counter()
        responses = stream.next_responses()
        for response in responses:
            await context.write(response)
        if responses:
            self.metrics.push_seconds.observe(time.perf_counter() - started)


class _Permits:
    """The push permits of one server, counted in its metrics (held, and waited for)."""

    def __init__(self, count: int, metrics: XdsMetrics) -> None:
        self._semaphore = asyncio.Semaphore(count)
        self._metrics = metrics

    async def acquire(self) -> None:
        self._metrics.streams_waiting.inc()
        try:
            await self._semaphore.acquire()
        finally:
            self._metrics.streams_waiting.dec()
        self._metrics.streams_pushing.inc()

    def release(self) -> None:
        self._semaphore.release()
        self._metrics.streams_pushing.dec()


class _Permit:
    """At most one permit, held across iterations of a stream's loop."""

    def __init__(self, permits: _Permits) -> None:
        self._permits = permits
        self.held = False

    async def acquire(self) -> None:
        if not self.held:
            await self._permits.acquire()
            self.held = True

    def release(self) -> None:
        if self.held:
            self._permits.release()
            self.held = False


async def _woken(watch: Watch, timeout: float | None) -> bool:
    """Wait for the stream's wakeup (True), or `timeout` seconds (False)."""
    try:
        await asyncio.wait_for(watch.wakeup.wait(), timeout)
    except TimeoutError:
        return False
    watch.wakeup.clear()
    return True


async def _read_requests(
    context: grpc.aio.ServicerContext[Any, Any], stream: ProtocolStream[Any], watch: Watch
) -> None:
    """Handle each request as it arrives, also while the stream waits for a push permit (no
    request is kept: thousands of them can carry thousands of names each), and wake the
    stream; a broken stream reads as its end."""
    try:
        while (request := await context.read()) is not grpc.aio.EOF:
            stream.handle_request(request)
            del request  # not kept alive while the next one is awaited
            watch.wakeup.set()
    except (grpc.aio.AioRpcError, grpc.RpcError, asyncio.InvalidStateError) as err:
        log.debug("ADS stream of %s ended: %s", watch.proxy.node_id, err)
    finally:
        stream.ended = True
        watch.wakeup.set()
