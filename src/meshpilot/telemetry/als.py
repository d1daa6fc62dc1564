"""`envoy.service.accesslog.v3.AccessLogService`: sidecars stream their access logs here.

Over mTLS a sidecar reports only as the service its certificate names: a stream whose entries
claim another service (a forged reporter) is dropped, so no workload can count requests for
another one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.accesslog.v3 import als_pb2

from meshpilot.identity.workload_tls import peer_service
from meshpilot.telemetry.entries import LogEntry, Reporter, log_entries

log = logging.getLogger(__name__)

Sink = Callable[[list[LogEntry]], None]


class AccessLogService:
    """Registered with `add_AccessLogServiceServicer_to_server`; `mtls`: reporters must be who
    their certificate says."""

    def __init__(self, sink: Sink, mtls: bool = False) -> None:
        self.sink = sink
        self.mtls = mtls

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> als_pb2.StreamAccessLogsResponse:
        reporter: Reporter | None = None
        certified = peer_service(context) if self.mtls else None
        async for message in request_iterator:
            if message.HasField("identifier"):
                reporter = Reporter.of(message.identifier.node, message.identifier.log_name)
                if self.mtls and reporter.service != certified:
                    log.warning(
                        "access logs of '%s' from a peer certified as '%s': dropped",
                        reporter.service,
                        certified,
                    )
                    reporter = None
            if reporter is None:
                continue
            entries = log_entries(reporter, message.http_logs.log_entry)
            if entries:
                self.sink(entries)
        return als_pb2.StreamAccessLogsResponse()
