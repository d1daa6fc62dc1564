"""ClusterLoadAssignment builder: the members of one cluster.

EDS is the largest resource type of a big mesh and the one that changes most (every sidecar
that comes or goes), so assignments are encoded straight to bytes from cached member entries;
`cluster_load_assignment` is the same message as a proto, for reading and for tests.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from envoy.config.endpoint.v3 import endpoint_pb2

from meshpilot.model.locality import Group, Locality
from meshpilot.translator.envoy.wire import length_delimited, string_field, varint

_PORT_TAG = varint(3 << 3)  # SocketAddress.port_value, a varint field
# LocalityLbEndpoints.locality (1), present but empty, and load_balancing_weight (3) = 1: gRPC's
# xDS client drops a locality without them (no weight means no load); Envoy ignores locality
# weights unless a cluster asks for locality-weighted balancing, which ours do not.
_LOCALITY = length_delimited(1, b"")
_LOCALITY_WEIGHT = length_delimited(3, varint(1 << 3) + varint(1))


def cluster_load_assignment(
    cluster: str, members: Iterable[tuple[str, int]]
) -> endpoint_pb2.ClusterLoadAssignment:
    """All members in one locality of weight 1; an empty assignment is valid and means "no
    healthy host"."""
    return endpoint_pb2.ClusterLoadAssignment.FromString(
        cluster_load_assignment_bytes(cluster, members)
    )


def cluster_load_assignment_bytes(cluster: str, members: Iterable[tuple[str, int]]) -> bytes:
    """The serialized assignment: cluster_name (1), one LocalityLbEndpoints (2): an empty
    locality (1), lb_endpoints (2) the members sorted by address and port, weight 1 (3)."""
    unique = sorted(set(members))
    if not unique:
        return string_field(1, cluster)
    lb_endpoints = b"".join([_lb_endpoint_entry(address, port) for address, port in unique])
    locality = _LOCALITY + lb_endpoints + _LOCALITY_WEIGHT
    return string_field(1, cluster) + length_delimited(2, locality)


def grouped_assignment_bytes(cluster: str, groups: Iterable[Group]) -> bytes:
    """An assignment of members by locality: one LocalityLbEndpoints (2) per group, with its
    locality (1), members (2), load_balancing_weight (3) and, past 0, its priority (5)."""
    entries = [string_field(1, cluster)]
    for group in groups:
        lb_endpoints = b"".join([_lb_endpoint_entry(a, p) for a, p in group.members])
        weight = length_delimited(3, varint(1 << 3) + varint(group.weight))
        priority = varint(5 << 3) + varint(group.priority) if group.priority else b""
        body = _locality_field(group.locality) + lb_endpoints + weight + priority
        entries.append(length_delimited(2, body))
    return b"".join(entries)


@functools.lru_cache(maxsize=4096)
def _locality_field(locality: Locality | None) -> bytes:
    """Locality{region (1), zone (2), sub_zone (3)}, the levels given."""
    if locality is None:
        return _LOCALITY
    levels = (locality.region, locality.zone, locality.subzone)
    return length_delimited(1, b"".join(string_field(i, v) for i, v in enumerate(levels, 1) if v))


@functools.lru_cache(maxsize=65536)
def _lb_endpoint_entry(address: str, port: int) -> bytes:
    """One member as an `lb_endpoints` entry: LbEndpoint.endpoint (1) -> Endpoint.address (1)
    -> Address.socket_address (1) -> SocketAddress{address (2), port_value (3)}."""
    socket_address = string_field(2, address) + _PORT_TAG + varint(port)
    lb_endpoint = length_delimited(1, length_delimited(1, length_delimited(1, socket_address)))
    return length_delimited(2, lb_endpoint)
