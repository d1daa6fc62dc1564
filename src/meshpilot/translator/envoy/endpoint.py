"""ClusterLoadAssignment builder: the members of one cluster."""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.endpoint.v3 import endpoint_pb2


def cluster_load_assignment(
    cluster: str, members: Iterable[tuple[str, int]]
) -> endpoint_pb2.ClusterLoadAssignment:
    """All members in one locality; an empty assignment is valid and means "no healthy host".

    Built in place: nested constructors would copy every sub-message, and EDS is the largest
    resource type in a big mesh.
    """
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster)
    unique = sorted(set(members))
    if unique:
        lb_endpoints = assignment.endpoints.add().lb_endpoints
        for address, port in unique:
            socket = lb_endpoints.add().endpoint.address.socket_address
            socket.address = address
            socket.port_value = port
    return assignment
