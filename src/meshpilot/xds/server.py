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
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.identity.admission import Metadata, Refused
from meshpilot.model.proxies import Proxy
from meshpilot.xds.cache import SnapshotCache, Watch
from meshpilot.xds.delta.stream import DeltaStream, new_delta_types
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.node import BadNode, proxy_from_node
from meshpilot.xds.peers import PeerLimits
from meshpilot.xds.protocol import ProtocolStream
from meshpilot.xds.sotw.stream import SotwStream, StreamShared, new_types
from meshpilot.xds.types import served_types

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# Streams that may have responses in flight at once (see AdsServer._serve): proxies that have
# answered what they were sent (every real sidecar, within milliseconds), and, in a pool of
# their own, streams that have not yet or stopped doing so. Clients that never answer or never
# read delay only each other, never the sidecars already in the mesh.
MAX_STREAMS_PUSHING = 64
MAX_UNPROVEN_STREAMS_PUSHING = 16
# A proxy that does not answer, or read, a response for this long lets another stream push
# meanwhile, and pushes only from the unproven pool until it answers again.
PERMIT_HOLD_S = 5.0
UNPROVEN_PERMIT_HOLD_S = 1.0
# A response that is not read, or not answered, for this long ends the stream (logged and
# counted): a client that stops reading would otherwise keep its copy, and its stream, forever.
WRITE_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 30.0
# gRPC frees an unread response only when its connection closes, so connections are closed
# after this age (as istiod does; gRPC adds jitter), with a grace for streams to finish: a
# sidecar reconnects within a second and is sent its configuration again.
MAX_CONNECTION_AGE_S = 30 * 60.0
MAX_CONNECTION_AGE_GRACE_S = 30.0
# gRPC cancels new streams beyond this many waiting to be accepted (its defaults: 1,000 and
# 3,000); thousands of sidecars reconnect at once after a restart, and are all to be accepted.
MAX_PENDING_STREAMS = 100_000

# Raises identity.admission.Refused for a proxy that may not join (metadata, gRPC peer); else
# returns what to call when its stream ends (or None).
Admit = Callable[[Proxy, Metadata, str], Callable[[], None] | None]


class AdsServer:
    """Component: `await start()`, `await stop()`."""

    def __init__(
        self,
        cache: SnapshotCache,
        metrics: XdsMetrics,
        address: str,
        admit: Admit | None = None,
        peers: PeerLimits | None = None,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.address = address
        self.admit = admit
        self.peers = peers or PeerLimits(0, 0)  # none unless given: `serve` gives its own
        self._server: grpc.aio.Server | None = None
        self._shared = StreamShared()
        # A state-of-the-world push is a full copy of a proxy's resources, and gRPC only queues
        # a write: the copy lives until the proxy has read it. After a change every stream
        # wants to push at once, so a stream pushes only while it holds a permit, from its first
        # response until the proxy has answered all of them: the permits bound the copies in
        # memory, and a slow proxy delays only itself.
        self._permits = _Permits(MAX_STREAMS_PUSHING, metrics)
        self._unproven_permits = _Permits(MAX_UNPROVEN_STREAMS_PUSHING, metrics)

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
                ("grpc.max_connection_age_ms", int(MAX_CONNECTION_AGE_S * 1000)),
                ("grpc.max_connection_age_grace_ms", int(MAX_CONNECTION_AGE_GRACE_S * 1000)),
            ]
        )
        methods = {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw, request_deserializer=discovery_pb2.DiscoveryRequest.FromString
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta, request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString
            ),
        }
        server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(ADS_SERVICE, methods), *handlers]
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

    async def _sotw(self, _requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._stream(context, SOTW)

    async def _delta(self, _requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await self._stream(context, DELTA)

    async def _stream(
        self, context: grpc.aio.ServicerContext[Any, Any], protocol: Protocol
    ) -> None:
        try:
            close = self.peers.open(context.peer())
        except Refused as refused:
            await self._refuse(refused, context)
            return
        try:
            await self._admit_and_serve(context, protocol)
        finally:
            close()

    async def _refuse(self, refused: Refused, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Count, log and end a stream that is not served (abort raises)."""
        self.metrics.streams_refused.labels(refused.reason).inc()
        log.warning("refusing ADS stream from %s: %s", context.peer(), refused.message)
        await context.abort(refused.code, refused.message)

    async def _admit_and_serve(
        self, context: grpc.aio.ServicerContext[Any, Any], protocol: Protocol
    ) -> None:
        first = await context.read()
        if first is grpc.aio.EOF:
            return
        try:
            proxy, leave = self._admitted(first, context)
        except Refused as refused:
            await self._refuse(refused, context)
            return
        stream, watch = self._connect(proxy, first, protocol)
        del first  # a request can hold thousands of names: none is kept past its handling
        try:
            stuck = await self._serve_connected(stream, watch, context)
            if stuck is not None:
                await stuck.end(context)
        finally:
            if leave is not None:
                leave()

    def _connect(
        self, proxy: Proxy, first: Any, protocol: Protocol
    ) -> tuple[ProtocolStream[Any], Watch]:
        types = protocol.new_types(served_types(proxy.proxyless))
        watch = self.cache.connect(proxy, types, protocol.name)
        log.info(
            "proxy connected: %s (%s %s, %s)", proxy.node_id, proxy.service, proxy.ip, protocol.name
        )
        stream = protocol.stream(watch, types, self.metrics, self._shared)
        stream.handle_request(first)
        return stream, watch

    async def _serve_connected(
        self,
        stream: ProtocolStream[Any],
        watch: Watch,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> _Stuck | None:
        """Serve until the stream ends; what made it stuck if the proxy stopped reading or
        answering (it then leaves the mesh at once, however long gRPC takes to end the call)."""
        reader = asyncio.create_task(_read_requests(context, stream, watch))
        try:
            await self._serve(stream, watch, context)
            if reader.done() and not reader.cancelled():
                reader.result()  # a request that could not be handled fails the stream
        except _Stuck as stuck:
            self.metrics.streams_ended.labels(stuck.reason).inc()
            log.warning("ending the ADS stream of %s: %s", watch.proxy.node_id, stuck)
            return stuck
        finally:
            reader.cancel()
            stream.close()
            self.cache.disconnect(watch)
            log.info("proxy disconnected: %s", watch.proxy.node_id)
        return None

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
        turns = _Turns(self._permits, self._unproven_permits)
        try:
            while not stream.ended:
                if not await _woken(watch, turns.wait_bound()):
                    turns.no_answer_in_time()
                    continue
                if not stream.in_flight:
                    turns.answered()  # the permit is acquired again below, behind others
                if not stream.ended and stream.wants_push():
                    await turns.acquire()
                    await self._push(stream, context, turns)
                    turns.sent(stream.in_flight)
        finally:
            turns.release()

    async def _push(
        self,
        stream: ProtocolStream[Any],
        context: grpc.aio.ServicerContext[Any, Any],
        turns: _Turns,
    ) -> None:
        started = time.perf_counter()
        responses = stream.next_responses()
        for response in responses:
            await _write(context, response, turns)
        if responses:
            self.metrics.push_seconds.observe(time.perf_counter() - started)


async def _write(
    context: grpc.aio.ServicerContext[Any, Any], response: bytes, turns: _Turns
) -> None:
    """Write one response; past the hold time the permit goes to others, past the write
    timeout the stream ends."""
    write = asyncio.ensure_future(context.write(response))
    try:
        async with asyncio.timeout(turns.hold_s):  # cheaper than wait_for: no task of its own
            await asyncio.shield(write)
        return
    except TimeoutError:
        turns.no_answer_in_time()
    done, _ = await asyncio.wait({write}, timeout=WRITE_TIMEOUT_S - turns.hold_s)
    if not done:
        raise _Stuck("write_timeout", f"a response was not read in {WRITE_TIMEOUT_S:g} s", write)
    write.result()


@dataclass(frozen=True)
class Protocol:
    """An xDS variant: its name (in `/proxies` and `status`), its per-type state and stream."""

    name: str
    new_types: Callable[[Iterable[str]], dict[str, Any]]
    stream: Callable[[Watch, Any, XdsMetrics, StreamShared], ProtocolStream[Any]]


SOTW = Protocol("sotw", new_types, SotwStream)
DELTA = Protocol("delta", new_delta_types, DeltaStream)


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


class _Turns:
    """One stream's turns at pushing: at most one permit, from the proven pool while the proxy
    answers what it is sent in time, else from the unproven pool; and when what it was sent
    must be answered by."""

    def __init__(self, proven: _Permits, unproven: _Permits) -> None:
        self._pools = {True: proven, False: unproven}
        self.proven = False  # a new stream has answered nothing yet
        self._held: _Permits | None = None
        self._answer_by: float | None = None

    @property
    def hold_s(self) -> float:
        return PERMIT_HOLD_S if self.proven else UNPROVEN_PERMIT_HOLD_S

    def wait_bound(self) -> float | None:
        """How long to wait for the proxy: until the hold time while a permit is held, and
        never past the answer deadline."""
        bounds = [self.hold_s] if self._held is not None else []
        if self._answer_by is not None:
            bounds.append(max(0.0, self._answer_by - time.monotonic()))
        return min(bounds, default=None)

    def no_answer_in_time(self) -> None:
        """Ends the stream past the answer deadline; else lets others push meanwhile."""
        if self._answer_by is not None and time.monotonic() >= self._answer_by:
            raise _Stuck("no_answer", f"responses were not answered in {ANSWER_TIMEOUT_S:g} s")
        if self._held is not None:
            self.release()
            self.proven = False

    def answered(self) -> None:
        """Everything sent was answered (ACK or NACK)."""
        if self._answer_by is not None:
            self.proven = True
            self._answer_by = None
        self.release()

    async def acquire(self) -> None:
        if self._held is None:
            pool = self._pools[self.proven]
            await pool.acquire()
            self._held = pool

    def sent(self, awaiting_answer: bool) -> None:
        if not awaiting_answer:
            self.release()  # all held back until other types are ACKed
        elif self._answer_by is None:
            self._answer_by = time.monotonic() + ANSWER_TIMEOUT_S

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None


class _Stuck(Exception):
    """The proxy does not read, or answer, what it is sent: its stream is ended."""

    def __init__(self, reason: str, message: str, unread: asyncio.Future[None] | None = None):
        super().__init__(message)
        self.reason = reason
        self.unread = unread

    async def end(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """End the call. A status would wait behind the unread response in gRPC's buffers,
        which only a closed connection frees: the handler waits for that, so the stream still
        counts against its peer's and its token's limits meanwhile."""
        if self.unread is None:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(self))
        else:
            with contextlib.suppress(Exception):
                await self.unread


async def _woken(watch: Watch, timeout: float | None) -> bool:
    """Wait for the stream's wakeup (True), or `timeout` seconds (False)."""
    if not watch.wakeup.is_set():
        try:
            async with asyncio.timeout(timeout):
                await watch.wakeup.wait()
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
