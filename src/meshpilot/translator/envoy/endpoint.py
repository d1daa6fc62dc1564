"""ClusterLoadAssignment builder: the members of one cluster."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from meshpilot.translator.envoy.common import socket_address


def lb_endpoint(address: str, port: int) -> endpoint_components_pb2.LbEndpoint:
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(address, port))
    )


def cluster_load_assignment(
    cluster: str, members: Iterable[tuple[str, int]]
) -> endpoint_pb2.ClusterLoadAssignment:
    """All members in one locality; an empty assignment is valid and means "no healthy host"."""
    lb_endpoints = [lb_endpoint(address, port) for address, port in sorted(set(members))]
    localities = [endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=lb_endpoints)]
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster, endpoints=localities if lb_endpoints else []
    )
