"""A hostile ADS client: a raw HTTP/2 connection advertising a zero flow-control window, so the
server can send headers but not one byte of a response. It sends a valid first request (a
sidecar's node and a CDS subscription) and then never reads or answers anything.

Plain sockets and the `h2` state machine: a gRPC client library would open its window itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, StreamEnded, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes

from meshpilot.xds.types import CLUSTER

ADS_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return struct.pack(">?I", False, len(message)) + message


class ZeroWindowClient:
    """One connection and one ADS stream that never lets a response through."""

    def __init__(
        self,
        address: str,
        node: base_pb2.Node,
        token: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.node = node
        self.token = token
        self.tls = tls
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self._stream_id = 0

    async def open(self) -> None:
        """Connect, shut the window, and send the first request."""
        server_name = self.host if self.tls is not None else None
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.tls, server_hostname=server_name
        )
        conn = self._conn
        conn.initiate_connection()
        conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        stream_id = self._stream_id = conn.get_next_available_stream_id()
        scheme = "https" if self.tls is not None else "http"
        headers = [
            (":method", "POST"),
            (":scheme", scheme),
            (":path", ADS_PATH),
            (":authority", f"{self.host}:{self.port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        if self.token is not None:
            headers.append(("authorization", f"Bearer {self.token}"))
        conn.send_headers(stream_id, headers)
        request = discovery_pb2.DiscoveryRequest(type_url=CLUSTER, node=self.node)
        conn.send_data(stream_id, grpc_frame(request.SerializeToString()))
        self._writer.write(conn.data_to_send())
        await self._writer.drain()

    async def ended_by_server(self) -> bool:
        """Wait until the server ends the stream (trailers or a reset): True; False if it closes
        the connection instead. Only control frames are answered: the window stays shut."""
        assert self._reader is not None and self._writer is not None
        while chunk := await self._reader.read(65536):
            try:
                events = self._conn.receive_data(chunk)
            except ProtocolError:  # h2 takes no frame after a GOAWAY, gRPC sends some
                events = [ConnectionTerminated()]
            for event in events:
                if isinstance(event, StreamEnded | StreamReset):
                    return event.stream_id == self._stream_id
                if isinstance(event, ConnectionTerminated):  # GOAWAY: the close follows
                    while await self._reader.read(65536):
                        pass
                    return False
            self._writer.write(self._conn.data_to_send())
        return False

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):  # the server may reset it
                await self._writer.wait_closed()
            self._writer = None
