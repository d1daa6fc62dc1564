"""The demo shop, one small app in three roles (chosen by MESH_SERVICE, set by `meshpilot up`):

- storefront: GET / calls the catalog and shows what it got;
- catalog: GET /items lists items; version v2 also asks the pricing service for prices, and
  fails now and then (FLAKY_PERCENT) to show the mesh retrying;
- pricing: GET /prices answers prices.

Every call to another service goes through the local sidecar (http://MESH_IP:15001 with the
service's name as Host), forwarding x-user and the trace headers (FORWARDED) so that header
routes and traces work.

MESH_BIND_IP, when set, is where the app listens and where it finds its sidecar's outbound port
instead of MESH_IP: the sidecar's local IP (`meshpilot sidecar --local-ip`), such as 127.0.0.1
inside the instance's own network namespace (docker-compose.yml).
"""

from __future__ import annotations

import json
import os
import random
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SERVICE = os.environ.get("MESH_SERVICE", "storefront")
VERSION = os.environ.get("MESH_VERSION", "")
IP = os.environ.get("MESH_IP", "127.0.0.1")
BIND_IP = os.environ.get("MESH_BIND_IP") or IP
PORT = int(os.environ.get("MESH_APP_PORT", "8080"))
FLAKY_PERCENT = float(os.environ.get("FLAKY_PERCENT", "0"))
# Forwarded from the request being served to the calls made for it: the header routes' x-user
# and the trace context (Envoy's request id, B3 and W3C), so that the sidecars' spans of one
# request form one trace.
FORWARDED = (
    "x-user",
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
ITEMS = ["kettle", "teapot", "mug"]


def call(service: str, path: str, incoming: Any) -> Any:
    """Ask another service through this instance's sidecar."""
    headers = {"Host": service} | {h: incoming[h] for h in FORWARDED if incoming.get(h)}
    request = urllib.request.Request(f"http://{BIND_IP}:15001{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as err:
        return {"error": err.code, "from": service}


def answer(path: str, headers: Any) -> tuple[int, dict[str, Any]]:
    me = {"service": SERVICE, "version": VERSION, "ip": IP}
    if SERVICE == "storefront":
        return 200, me | {"catalog": call("catalog", "/items", headers)}
    if SERVICE == "catalog":
        if random.uniform(0, 100) < FLAKY_PERCENT:
            return 503, me | {"error": "flaky catalog"}
        if VERSION == "v2":
            return 200, me | {"items": ITEMS, "prices": call("pricing", "/prices", headers)}
        return 200, me | {"items": ITEMS}
    return 200, me | {"prices": {item: 3 + len(item) for item in ITEMS}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: send both at once

    def do_GET(self) -> None:
        status, body = answer(self.path, self.headers)
        data = json.dumps(body, indent=2).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


if __name__ == "__main__":
    ThreadingHTTPServer((BIND_IP, PORT), Handler).serve_forever()
