"""`envoy.service.accesslog.v3.AccessLogService`: sidecars stream their access logs here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2

from meshpilot.telemetry.entries import LogEntry, Reporter, log_entries

log = logging.getLogger(__name__)

Sink = Callable[[list[LogEntry]], None]


class AccessLogService:
    """Registered with `add_AccessLogServiceServicer_to_server`."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> als_pb2.StreamAccessLogsResponse:
        reporter: Reporter | None = None
        async for message in request_iterator:
            if message.HasField("identifier"):
                reporter = Reporter.of(message.identifier.node, message.identifier.log_name)
            if reporter is None:
                log.warning("access-log stream without an identifier; dropping its entries")
                continue
            entries = log_entries(reporter, message.http_logs.log_entry)
            if entries:
                self.sink(entries)
        return als_pb2.StreamAccessLogsResponse()
