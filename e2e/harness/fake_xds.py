"""A stand-in ADS server for harness self-tests: answers every initial request with an empty
resource set (so Envoy goes LIVE with no listeners) and records who connected.

Not the product's control plane; it lets the harness and the bootstrap be checked against a real
Envoy before, and independently of, `meshpilot serve`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import json_format


@dataclass
class Connection:
    node: dict[str, Any]
    connected_at: float
    type_urls: list[str] = field(default_factory=list)


class FakeAds(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self._lock = threading.Lock()

    def StreamAggregatedResources(
        self, request_iterator: Iterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> Iterator[discovery_pb2.DiscoveryResponse]:
        connection: Connection | None = None
        for request in request_iterator:
            if connection is None:
                node = json_format.MessageToDict(request.node, preserving_proto_field_name=True)
                connection = Connection(node, time.monotonic())
                with self._lock:
                    self.connections.append(connection)
            if request.response_nonce:  # an ACK or NACK of something we sent
                continue
            connection.type_urls.append(request.type_url)
            yield discovery_pb2.DiscoveryResponse(
                version_info="1", type_url=request.type_url, nonce=str(time.monotonic_ns())
            )


class FakeAdsServer:
    """`start()` / `stop()` an in-process ADS server on `ip:port`."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.servicer = FakeAds()
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def connections(self) -> list[Connection]:
        return list(self.servicer.connections)

    def start(self) -> FakeAdsServer:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self.servicer, server)
        server.add_insecure_port(self.address)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None
