"""A proxyless gRPC client for e2e tests: gRPC's own xDS client, no sidecar.

    GRPC_XDS_BOOTSTRAP=bootstrap.json python e2e/grpc_xds_client.py \
        --target xds:///greeter:50051 --calls 500 --out replies.json

Calls `/meshpilot.e2e.Echo/Who` (see grpc_app.py) `--calls` times over one channel, writes
`{"replies": [...], "errors": [...]}` to `--out`, then keeps the channel (and its ADS stream)
open until SIGTERM, so that the control plane still lists the client. Exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

import grpc
from grpc_app import PATH

# The first call waits for the listener, routes, clusters and endpoints to arrive.
FIRST_CALL_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    with grpc.insecure_channel(args.target) as channel:
        who = channel.unary_unary(PATH)
        replies, errors = [], []
        for number in range(args.calls):
            timeout = FIRST_CALL_TIMEOUT_S if number == 0 else CALL_TIMEOUT_S
            try:
                replies.append(who(f"{number}".encode(), timeout=timeout, wait_for_ready=True))
            except grpc.RpcError as err:
                errors.append(f"{err.code()}: {err.details()}")
        written = {"replies": [r.decode() for r in replies], "errors": errors}
        partial = args.out.with_suffix(".partial")
        partial.write_text(json.dumps(written))
        partial.rename(args.out)  # the test reads the file only once it is whole
        stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
