"""Listener builders: the sidecar's inbound (15006) and outbound (15001) HTTP listeners."""

from __future__ import annotations

from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from meshpilot.translator.envoy.common import socket_address, typed

HCM_FILTER = "envoy.filters.network.http_connection_manager"


def http_listener(
    name: str, ip: str, port: int, manager: hcm.HttpConnectionManager
) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=name,
        address=socket_address(ip, port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(name=HCM_FILTER, typed_config=typed(manager))
                ]
            )
        ],
    )
