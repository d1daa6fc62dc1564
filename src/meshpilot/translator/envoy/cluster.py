"""Cluster builders: one EDS cluster per service and per subset, one static cluster for the app."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from meshpilot.translator.envoy.common import ads_config_source, duration, socket_address

CONNECT_TIMEOUT_MS = 2000


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    """A cluster whose members arrive over EDS under the cluster's own name."""
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_config_source()),
        connect_timeout=duration(CONNECT_TIMEOUT_MS),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )


def static_cluster(name: str, ip: str, port: int) -> cluster_pb2.Cluster:
    """A cluster with one fixed member: how the inbound listener reaches the local app."""
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(CONNECT_TIMEOUT_MS),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=socket_address(ip, port)
                            )
                        )
                    ]
                )
            ],
        ),
    )
