"""The e2e test app: answers every request with JSON saying who answered and what it got.

    python e2e/app.py --ip 127.100.3.2 --port 8080 --service reviews --version v1

Behaviours for tests, combinable in one path (e.g. `/delay/200/status/503`):
- `/status/<code>` answers with that status;
- `/delay/<ms>` sleeps that long before answering;
- headers `x-fail-times: N` and `x-fail-key: K`: the first N requests carrying key K get 503,
  later ones the normal answer (counts are per app process), for retry tests;
- header `x-fail-ip: IP`: the instance on that IP answers 503, the others normally (one bad
  instance among healthy ones, for outlier detection);
- `/call/<service><path>` calls `<service>` at `<path>` (default `/`) through the instance's
  sidecar (its outbound port, on the app's IP) and answers with the callee's status and JSON
  under `called`, forwarding the request's trace headers (TRACE_HEADERS) as a traced app must;
- `GET /__seen` answers `{"hosts": {HOST: count}}`: the requests this instance received so far
  per Host header (a mirrored copy arrives with Host `<host>-shadow`), not counting itself.
Silent (no access log) and exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, ClassVar

STATUS = re.compile(r"/status/(\d{3})(?=/|$|\?)")
DELAY = re.compile(r"/delay/(\d+)(?=/|$|\?)")
CALL = re.compile(r"/call/([a-z0-9-]+)(/[^?]*)?")
NO_BODY = {204, 304}
OUTBOUND_PORT = 15001
# What an app forwards from the request it serves to the calls it makes meanwhile, so that the
# sidecars' spans join one trace (Istio asks the same of apps): Envoy's request id, B3 (Zipkin)
# in both forms and W3C trace context.
TRACE_HEADERS = (
    "x-request-id",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "traceparent",
    "tracestate",
)


class FailureCounter:
    """Per-key request counts for `x-fail-times`, shared by all handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()

    def should_fail(self, key: str, times: int) -> bool:
        with self._lock:
            self._seen[key] += 1
            return self._seen[key] <= times


class HostCounter:
    """Requests received per Host header, shared by all handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()

    def count(self, host: str) -> None:
        with self._lock:
            self._seen[host] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._seen)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: do not delay the body
    identity: ClassVar[dict[str, Any]] = {}
    failures: ClassVar[FailureCounter] = FailureCounter()
    hosts: ClassVar[HostCounter] = HostCounter()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the process log is for problems only."""

    def handle_any(self) -> None:
        body = self.read_body()
        if self.path == "/__seen":
            self.reply(200, {"hosts": self.hosts.snapshot()})
            return
        self.hosts.count(self.headers.get("host", ""))
        delay = DELAY.search(self.path)
        if delay:
            time.sleep(int(delay.group(1)) / 1000)
        status = self.status_for()
        payload = {
            **self.identity,
            "method": self.command,
            "path": self.path,
            "headers": self.header_dict(),
            "body": body.decode("utf-8", "replace"),
        }
        call = CALL.fullmatch(self.path.split("?")[0])
        if call:
            payload["called"] = self.call(call.group(1), call.group(2) or "/")
        self.reply(status, payload)

    def call(self, service: str, path: str) -> dict[str, Any]:
        """GET `service` `path` through this instance's sidecar, with the trace headers."""
        headers = {h: self.headers[h] for h in TRACE_HEADERS if self.headers.get(h)}
        url = f"http://{self.identity['ip']}:{OUTBOUND_PORT}{path}"
        request = urllib.request.Request(url, headers={**headers, "Host": service})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return {"status": reply.status, "json": json.load(reply)}
        except urllib.error.HTTPError as err:
            return {"status": err.code, "json": None}

    def read_body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def status_for(self) -> int:
        times = int(self.headers.get("x-fail-times") or 0)
        if times and self.failures.should_fail(self.headers.get("x-fail-key", ""), times):
            return 503
        if self.headers.get("x-fail-ip") == self.identity["ip"]:
            return 503
        match = STATUS.search(self.path)
        return int(match.group(1)) if match else 200

    def header_dict(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def reply(self, status: int, payload: dict[str, Any]) -> None:
        data = b"" if status in NO_BODY else json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-app-service", str(self.identity["service"]))
        self.send_header("x-app-version", str(self.identity["version"]))
        self.send_header("x-app-ip", str(self.identity["ip"]))
        if status not in NO_BODY:
            self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-request are normal in these tests; no tracebacks."""


def arguments(description: str, port: int = 8080, service: str = "app") -> argparse.ArgumentParser:
    """The options every test app takes: where it listens and who it says it is."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--service", default=service)
    parser.add_argument("--version", default="")
    return parser


def serve(server: Server, args: argparse.Namespace) -> int:
    """Answer as the app of `args` until SIGTERM, then exit 0."""
    Handler.identity = {
        "service": args.service,
        "version": args.version,
        "ip": args.ip,
        "port": args.port,
    }
    signal.signal(signal.SIGTERM, _exit)
    try:
        server.serve_forever(poll_interval=0.1)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    return serve(Server((args.ip, args.port), Handler), args)


def _exit(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
