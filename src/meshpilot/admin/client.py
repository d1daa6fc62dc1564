"""GET JSON from meshpilot's own HTTP endpoints (the control plane admin API, the mixer's HTTP
port), for the command line.

Every way such a request can fail becomes one MeshpilotError line. The commonest mistake is a
neighbouring port (the gRPC one next to the HTTP one), so a failure on a port that meshpilot or a
sidecar uses by default names what listens there and which option the user meant."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from meshpilot.bootstrap import parse_host_port
from meshpilot.errors import MeshpilotError
from meshpilot.model.proxies import ADMIN_PORT, INBOUND_PORT, OUTBOUND_PORT

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Endpoint:
    """What a HOST:PORT option points at: named in errors with the option and its default."""

    name: str
    option: str
    default: str

    @property
    def default_port(self) -> int:
        return int(self.default.rpartition(":")[2])


ADMIN_API = Endpoint("the control plane admin API", "--admin", "127.0.0.1:18001")
MIXER_HTTP = Endpoint("the mixer's HTTP API", "--mixer", "127.0.0.1:18082")

KNOWN_PORTS = {
    18000: "the control plane's xDS port",
    ADMIN_API.default_port: "the control plane admin API's port",
    18081: "the mixer's gRPC port",
    MIXER_HTTP.default_port: "the mixer's HTTP port",
    ADMIN_PORT: "a sidecar's Envoy admin port",
    OUTBOUND_PORT: "a sidecar's outbound port",
    INBOUND_PORT: "a sidecar's inbound port",
}


def http_address(text: str, endpoint: Endpoint) -> str:
    """`HOST:PORT`, also given as `http://HOST:PORT` or with a trailing `/`."""
    address = text.strip().removesuffix("/")
    if address.startswith("https://"):
        raise MeshpilotError(f"{endpoint.option} {text}: {endpoint.name} speaks plain http://")
    address = address.removeprefix("http://")
    if "/" in address:
        raise MeshpilotError(f"{endpoint.option} {text}: give HOST:PORT, without a path")
    parse_host_port(address, option=endpoint.option, example=endpoint.default)
    return address


def get_json(
    endpoint: Endpoint,
    address: str,
    path: str,
    *,
    query: Mapping[str, object] | None = None,
    token: str | None = None,
) -> Any:
    """GET `path` (with the `query` parameters that are not None) and parse the JSON answer."""
    address = http_address(address, endpoint)
    params = urlencode({k: v for k, v in (query or {}).items() if v is not None})
    try:
        status, body = _get(address, f"{path}?{params}" if params else path, token)
    except (OSError, http.client.HTTPException) as err:
        reason = f"cannot reach {endpoint.name} at {address}: {_reason(err)}"
        raise _failure(endpoint, address, reason) from None
    if status != 200:
        reason = f"{endpoint.name} at {address} answered {status} to GET {path}"
        raise _failure(endpoint, address, reason + _status_advice(status))
    try:
        return json.loads(body)
    except ValueError:
        reason = f"{endpoint.name} at {address} answered GET {path} with something not JSON"
        raise _failure(endpoint, address, reason) from None


def _get(address: str, target: str, token: str | None) -> tuple[int, bytes]:
    host, port = parse_host_port(address, option="address")
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_S)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        connection.request("GET", target, headers=headers)
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def _reason(err: OSError | http.client.HTTPException) -> str:
    """What went wrong, in words (the exception's own text is often `[Errno -2] ...`)."""
    if isinstance(err, http.client.RemoteDisconnected):
        return "it closed the connection without an HTTP answer (a gRPC or TLS port?)"
    if isinstance(err, http.client.BadStatusLine) and _is_http2_frame(str(err)):
        return "it answers HTTP/2 (gRPC), not HTTP/1.1"
    if isinstance(err, http.client.HTTPException):
        return "its answer is not HTTP/1.1"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, TimeoutError):
        return f"no answer within {TIMEOUT_S:g} s"
    if isinstance(err, socket.gaierror):
        return f"cannot resolve the host name ({err.strerror})"
    return err.strerror or str(err) or type(err).__name__


def _is_http2_frame(line: str) -> bool:
    """A server's HTTP/2 preface: a SETTINGS frame (type 4) where a status line should be."""
    return len(line) > 3 and line[3] == "\x04"


def _status_advice(status: int) -> str:
    return " (give --admin-token-file)" if status == 401 else ""


def _failure(endpoint: Endpoint, address: str, message: str) -> MeshpilotError:
    """The error, naming the option the user meant when `address` is another known port."""
    port = int(address.rpartition(":")[2])
    if port in KNOWN_PORTS and port != endpoint.default_port:
        message += (
            f"; {address} is {KNOWN_PORTS[port]}, {endpoint.name} is on {endpoint.option} "
            f"(default {endpoint.default})"
        )
    return MeshpilotError(message)
