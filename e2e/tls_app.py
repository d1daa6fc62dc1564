"""The e2e test app (app.py) behind TLS, as an external HTTPS server for TLS origination tests:

    python e2e/tls_app.py --ip 127.0.0.1 --port 8443 --cert cert.pem --key key.pem

Answers like app.py. A client that gives up during the handshake (it did not trust the
certificate) is dropped quietly. Exits 0 on SIGTERM.
"""

from __future__ import annotations

import ssl
import sys

from app import Handler, Server, arguments, serve


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], port=8443, service="tls-app")
    parser.add_argument("--cert", required=True, help="PEM certificate (chain) to present")
    parser.add_argument("--key", required=True, help="its PEM private key")
    args = parser.parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server = Server((args.ip, args.port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    return serve(server, args)


if __name__ == "__main__":
    sys.exit(main())
