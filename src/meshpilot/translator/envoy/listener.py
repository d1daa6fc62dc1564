"""Listener builders: the sidecar's inbound (15006) and outbound (15001) listeners, HTTP or TCP,
a caller's outbound TCP listener per tcp service (on the caller's IP, the service's port), and
the API listeners of proxyless gRPC clients (no address: gRPC routes its own calls with them).

An inbound listener with workload identity terminates mTLS: strict, only that; permissive, a TLS
inspector tells TLS from plaintext and each has its own filter chain with the same filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from meshpilot.translator.envoy.common import socket_address, typed

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
# Which way a listener's traffic goes: Envoy makes the HTTP connection manager's spans server
# spans (inbound) or client spans (outbound) by it.
Direction = Literal["inbound", "outbound"]
_DIRECTIONS = {
    "inbound": base_pb2.TrafficDirection.Value("INBOUND"),
    "outbound": base_pb2.TrafficDirection.Value("OUTBOUND"),
}


@dataclass(frozen=True)
class DownstreamTls:
    """How an inbound listener terminates TLS, and whether plaintext is accepted too."""

    socket: base_pb2.TransportSocket
    permissive: bool = False


def listener(
    name: str,
    ip: str,
    port: int,
    direction: Direction,
    filter_name: str,
    config: Message,
    tls: DownstreamTls | None = None,
) -> listener_pb2.Listener:
    """One terminal network filter, in one filter chain (two when permissive)."""
    terminal = listener_components_pb2.Filter(name=filter_name, typed_config=typed(config))
    result = listener_pb2.Listener(
        name=name, address=socket_address(ip, port), traffic_direction=_DIRECTIONS[direction]
    )
    if tls is None:
        result.filter_chains.add(filters=[terminal])
        return result
    secure = result.filter_chains.add(filters=[terminal], transport_socket=tls.socket)
    if tls.permissive:
        secure.filter_chain_match.transport_protocol = "tls"
        result.filter_chains.add(filters=[terminal])
        result.listener_filters.add(
            name=TLS_INSPECTOR, typed_config=typed(tls_inspector_pb2.TlsInspector())
        )
    return result


def http_listener(
    name: str,
    ip: str,
    port: int,
    direction: Direction,
    manager: hcm.HttpConnectionManager,
    tls: DownstreamTls | None = None,
) -> listener_pb2.Listener:
    return listener(name, ip, port, direction, HCM_FILTER, manager, tls)


def tcp_listener(
    name: str,
    ip: str,
    port: int,
    direction: Direction,
    proxy: tcp_proxy_pb2.TcpProxy,
    tls: DownstreamTls | None = None,
) -> listener_pb2.Listener:
    return listener(name, ip, port, direction, TCP_PROXY_FILTER, proxy, tls)


def api_listener(name: str, manager: hcm.HttpConnectionManager) -> listener_pb2.Listener:
    """What a proxyless gRPC client asks for by its target's name: the HTTP connection manager
    (routes over RDS, the router last) it applies to its calls, with no socket of its own."""
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=typed(manager))
    )
