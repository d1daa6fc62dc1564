"""The quickstart app: answers every GET with who it is (service, version, address)."""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (
            json.dumps(
                {
                    "service": os.environ["MESH_SERVICE"],
                    "version": os.environ["MESH_VERSION"],
                    "ip": os.environ["MESH_IP"],
                    "path": self.path,
                }
            ).encode()
            + b"\n"
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


if __name__ == "__main__":
    address = (os.environ["MESH_IP"], int(os.environ["MESH_APP_PORT"]))
    ThreadingHTTPServer(address, Hello).serve_forever()
