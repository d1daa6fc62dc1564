"""The e2e test app (app.py) behind TLS, as an external HTTPS server for TLS origination tests:

    python e2e/tls_app.py --ip 127.0.0.1 --port 8443 --cert cert.pem --key key.pem

Answers like app.py. A client that gives up during the handshake (it did not trust the
certificate) is dropped quietly. Exits 0 on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import ssl
import sys
from types import FrameType

from app import Handler, Server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--service", default="tls-app")
    parser.add_argument("--cert", required=True, help="PEM certificate (chain) to present")
    parser.add_argument("--key", required=True, help="its PEM private key")
    args = parser.parse_args(argv)
    Handler.identity = {"service": args.service, "version": "", "ip": args.ip, "port": args.port}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server = Server((args.ip, args.port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, _exit)
    try:
        server.serve_forever(poll_interval=0.1)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


def _exit(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
