"""Trace collectors for tests, each on an address of the test's own, keeping every span they
receive in one shape (Zipkin v2's: `traceId`, `id`, `parentId`, `kind`, `name`,
`localEndpoint.serviceName`, `tags`):

- ZipkinReceiver: Zipkin v2, `POST /api/v2/spans` with a JSON list of spans (Envoy's
  `envoy.tracers.zipkin` sends them chunked);
- OtlpReceiver: OpenTelemetry, the OTLP/gRPC TraceService (`envoy.tracers.opentelemetry`).

    with ZipkinReceiver(loopback.ip()) as collector:
        ...  # a mesh whose telemetry.tracing.collector is collector.address
        trace = collector.wait_for_trace(lambda spans: len(spans) == 3)

Both run in the test's process (threads), so leaving the `with` block stops them, pass or fail.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from harness.wait import wait_for

SPANS_PATH = "/api/v2/spans"
ZIPKIN_PORT = 9411
OTLP_GRPC_PORT = 4317
Span = dict[str, Any]


class SpanStore:
    """The spans received so far, grouped by trace id; `address` is the collector's HOST:PORT."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._lock = threading.Lock()
        self._traces: dict[str, list[Span]] = defaultdict(list)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def add(self, spans: Iterable[Span]) -> None:
        with self._lock:
            for span in spans:
                self._traces[span["traceId"]].append(span)

    def traces(self) -> dict[str, list[Span]]:
        with self._lock:
            return {trace: list(spans) for trace, spans in self._traces.items()}

    def wait_for_trace(
        self, complete: Callable[[list[Span]], bool], timeout: float = 20.0
    ) -> list[Span]:
        """The spans of the first trace for which `complete` holds, once it does (Envoy reports
        spans in batches, on a timer: `tracing.zipkin.flush_interval_ms` or
        `tracing.opentelemetry.flush_interval_ms`, 5 s by default)."""

        def found() -> list[Span] | None:
            return next((s for s in self.traces().values() if complete(s)), None)

        return wait_for(found, timeout, message=f"a complete trace at {self.address}")


class _ZipkinHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: ClassVar[SpanStore]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test reads what arrived, not a log."""

    def do_POST(self) -> None:
        body = self._body()
        if self.path != SPANS_PATH:
            self._answer(404)
            return
        try:
            spans = json.loads(body)
        except ValueError:
            self._answer(400)
            return
        self.store.add(spans)
        self._answer(202)  # what Zipkin answers

    def _body(self) -> bytes:
        """The request body, as sent with a length or in chunks; gunzipped if it came so."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = b"".join(iter(self._chunk, b""))
        else:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("content-encoding", "").lower() == "gzip":
            return gzip.decompress(body)
        return body

    def _chunk(self) -> bytes:
        size = int(self.rfile.readline().split(b";")[0], 16)
        data = self.rfile.read(size)
        self.rfile.readline()  # the CRLF after the chunk (or after the last, empty one)
        return data

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


class ZipkinReceiver(SpanStore):
    """A Zipkin v2 collector (HTTP) on `ip:port`."""

    def __init__(self, ip: str, port: int = ZIPKIN_PORT) -> None:
        super().__init__(f"{ip}:{port}")
        handler = type("Handler", (_ZipkinHandler,), {"store": self})
        self._server = ThreadingHTTPServer((ip, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


_KINDS = {trace_pb2.Span.SPAN_KIND_SERVER: "SERVER", trace_pb2.Span.SPAN_KIND_CLIENT: "CLIENT"}


def _value(value: common_pb2.AnyValue) -> str:
    kind = value.WhichOneof("value")
    return str(getattr(value, kind)) if kind else ""


def _attributes(attributes: Iterable[common_pb2.KeyValue]) -> dict[str, str]:
    return {a.key: _value(a.value) for a in attributes}


def zipkin_shape(span: trace_pb2.Span, service: str) -> Span:
    """An OTLP span in the shape the Zipkin receiver keeps (ids in hex, as Zipkin writes them)."""
    shaped: Span = {
        "traceId": span.trace_id.hex(),
        "id": span.span_id.hex(),
        "kind": _KINDS.get(span.kind, str(span.kind)),
        "name": span.name,
        "localEndpoint": {"serviceName": service},
        "tags": _attributes(span.attributes),
    }
    if span.parent_span_id:
        shaped["parentId"] = span.parent_span_id.hex()
    return shaped


def _scope_spans(resource_spans: trace_pb2.ResourceSpans) -> Iterable[Any]:
    """The spans' groups: `scope_spans` in today's OTLP, `instrumentation_library_spans` in the
    older copy of the OTLP protos that xds-protos ships (Envoy's API imports them), with the same
    field numbers, so either reads what Envoy sends."""
    fields = type(resource_spans).DESCRIPTOR.fields_by_name
    name = "scope_spans" if "scope_spans" in fields else "instrumentation_library_spans"
    groups: Iterable[Any] = getattr(resource_spans, name)
    return groups


TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"


class _TraceService:
    """OTLP's TraceService, registered by name: the copy of the OTLP protos that xds-protos
    installs has the messages but no gRPC stubs."""

    def __init__(self, store: SpanStore) -> None:
        self.store = store

    def export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope in _scope_spans(resource_spans):
                self.store.add(zipkin_shape(span, service) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def handler(self) -> grpc.GenericRpcHandler:
        export = grpc.unary_unary_rpc_method_handler(
            self.export,
            request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(TRACE_SERVICE, {"Export": export})


class OtlpReceiver(SpanStore):
    """An OpenTelemetry collector's OTLP/gRPC trace endpoint (plaintext) on `ip:port`."""

    def __init__(self, ip: str, port: int = OTLP_GRPC_PORT) -> None:
        super().__init__(f"{ip}:{port}")
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers((_TraceService(self).handler(),))
        self._server.add_insecure_port(self.address)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop(grace=None).wait()
