"""A minimal asyncio HTTP/1.1 server for small GET-only JSON/text APIs (admin, metrics).

The admin surface is a handful of GET endpoints; a framework would add a dependency and a second
event-loop integration for no gain.
"""

from __future__ import annotations

import asyncio
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

    @classmethod
    def json(cls, value: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(value, indent=2).encode() + b"\n", "application/json")


Handler = Callable[[dict[str, str]], Reply | Awaitable[Reply]]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Error",
}


class HttpServer:
    """Component serving `routes` (path -> handler taking the query parameters)."""

    def __init__(self, address: str, routes: dict[str, Handler]) -> None:
        self.address = address
        self.routes = routes
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
            reply = await self._dispatch(head.decode("latin-1").split("\r\n", 1)[0])
            writer.write(_encode(reply))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, request_line: str) -> Reply:
        parts = request_line.split(" ")
        if len(parts) != 3:
            return Reply(400, b"bad request\n")
        method, target, _ = parts
        if method != "GET":
            return Reply(405, b"only GET\n")
        url = urlsplit(target)
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


def _encode(reply: Reply) -> bytes:
    head = (
        f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n"
        f"Content-Type: {reply.content_type}\r\nContent-Length: {len(reply.body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + reply.body
