"""Listener builders: the sidecar's inbound (15006) and outbound (15001) listeners, HTTP or TCP,
and a caller's outbound TCP listener per tcp service (on the caller's IP, the service's port)."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf.message import Message

from meshpilot.translator.envoy.common import socket_address, typed

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"


def listener(
    name: str, ip: str, port: int, filter_name: str, config: Message
) -> listener_pb2.Listener:
    """One filter chain holding one terminal network filter."""
    terminal = listener_components_pb2.Filter(name=filter_name, typed_config=typed(config))
    return listener_pb2.Listener(
        name=name,
        address=socket_address(ip, port),
        filter_chains=[listener_components_pb2.FilterChain(filters=[terminal])],
    )


def http_listener(
    name: str, ip: str, port: int, manager: hcm.HttpConnectionManager
) -> listener_pb2.Listener:
    return listener(name, ip, port, HCM_FILTER, manager)


def tcp_listener(
    name: str, ip: str, port: int, proxy: tcp_proxy_pb2.TcpProxy
) -> listener_pb2.Listener:
    return listener(name, ip, port, TCP_PROXY_FILTER, proxy)
