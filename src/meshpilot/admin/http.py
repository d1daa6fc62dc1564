"""A minimal asyncio HTTP/1.1 server for small GET-only JSON/text APIs (admin, metrics).

The admin surface is a handful of GET endpoints; a framework would add a dependency and a second
event-loop integration for no gain. With a `token`, every path but the health check needs
`Authorization: Bearer <token>` (401 otherwise): the admin API shows the whole mesh's
configuration, which only operators should read. `public` paths (the web console's assets,
which hold no data) stay open too.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(value, indent=2).encode() + b"\n", "application/json")


Handler = Callable[[dict[str, str]], Reply | Awaitable[Reply]]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Error",
}


class HttpServer:
    """Component serving `routes` (path -> handler taking the query parameters)."""

    OPEN_PATHS = frozenset({"/healthz"})

    def __init__(
        self,
        address: str,
        routes: dict[str, Handler],
        token: str | None = None,
        public: frozenset[str] = frozenset(),
    ) -> None:
        self.address = address
        self.routes = routes
        self.token = token
        self.open_paths = self.OPEN_PATHS | public
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        self._server = await asyncio.start_server(self._connection, host, int(port))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            reply = await self._dispatch(request_line, _authorization(header_lines))
            writer.write(_encode(reply))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, request_line: str, authorization: str = "") -> Reply:
        parts = request_line.split(" ")
        if len(parts) != 3:
            return Reply(400, b"bad request\n")
        method, target, _ = parts
        if method != "GET":
            return Reply(405, b"only GET\n")
        url = urlsplit(target)
        if not self._authorized(url.path, authorization):
            return Reply(401, b"unauthorized\n", headers=(("WWW-Authenticate", "Bearer"),))
        handler = self.routes.get(url.path)
        if handler is None:
            return Reply(404, b"not found\n")
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            reply = handler(query)
            return await reply if isinstance(reply, Awaitable) else reply
        except Exception:
            log.exception("admin handler for %s failed", url.path)
            return Reply(500, b"internal error\n")

    def _authorized(self, path: str, authorization: str) -> bool:
        if self.token is None or path in self.open_paths:
            return True
        return hmac.compare_digest(authorization.encode(), f"Bearer {self.token}".encode())


def _authorization(header_lines: list[str]) -> str:
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            return value.strip()
    return ""


def _encode(reply: Reply) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in reply.headers)
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n"
        f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + reply.body
