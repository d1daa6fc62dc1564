"""A gRPC server for e2e tests, with no generated code: one unary method on raw bytes.

    python e2e/grpc_app.py --ip 127.100.3.2 --port 8080 --service greeter --version v1

`/meshpilot.e2e.Echo/Who` answers `SERVICE:VERSION:REQUEST`. Metadata `x-fail-times: N` with
`x-fail-key: K` makes the first N calls carrying key K fail with UNAVAILABLE (for retry tests).
Exits 0 on SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections import Counter
from concurrent import futures

import grpc
from app import arguments

SERVICE = "meshpilot.e2e.Echo"
METHOD = "Who"
PATH = f"/{SERVICE}/{METHOD}"


class Echo:
    def __init__(self, service: str, version: str) -> None:
        self.identity = f"{service}:{version}"
        self._lock = threading.Lock()
        self._seen: Counter[str] = Counter()

    def who(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata())
        times = int(metadata.get("x-fail-times") or 0)
        if times and self._should_fail(str(metadata.get("x-fail-key", "")), times):
            context.abort(grpc.StatusCode.UNAVAILABLE, "failing on purpose")
        return f"{self.identity}:".encode() + request

    def _should_fail(self, key: str, times: int) -> bool:
        with self._lock:
            self._seen[key] += 1
            return self._seen[key] <= times


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    echo = Echo(args.service, args.version)
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {METHOD: grpc.unary_unary_rpc_method_handler(echo.who)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[handler])
    server.add_insecure_port(f"{args.ip}:{args.port}")
    server.start()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.stop(grace=0).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
