"""A Zipkin v2 collector for tests: accepts `POST /api/v2/spans` (a JSON list of spans, as
Envoy's Zipkin tracer sends them) on an address of the test's own and keeps every span.

    with ZipkinReceiver(loopback.ip()) as zipkin:
        ...  # a mesh whose telemetry.tracing.collector is zipkin.address
        trace = zipkin.wait_for_trace(lambda spans: len(spans) == 3, timeout=20)

It runs in the test's process (a thread), so leaving the `with` block stops it, pass or fail.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar

from harness.wait import wait_for

SPANS_PATH = "/api/v2/spans"
ZIPKIN_PORT = 9411
Span = dict[str, Any]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    receiver: ClassVar[ZipkinReceiver]

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
        self.receiver.add(spans)
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


class ZipkinReceiver:
    """The spans received so far, grouped by trace id; `address` is its HOST:PORT."""

    def __init__(self, ip: str, port: int = ZIPKIN_PORT) -> None:
        handler = type("Handler", (_Handler,), {"receiver": self})
        self._server = ThreadingHTTPServer((ip, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._lock = threading.Lock()
        self._traces: dict[str, list[Span]] = defaultdict(list)
        self.address = f"{ip}:{port}"

    def __enter__(self) -> ZipkinReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def add(self, spans: list[Span]) -> None:
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
        spans in batches, on a timer of `tracing.zipkin.flush_interval_ms`: 5 s by default)."""

        def found() -> list[Span] | None:
            return next((s for s in self.traces().values() if complete(s)), None)

        return wait_for(found, timeout, message=f"a complete trace at {self.address}")
