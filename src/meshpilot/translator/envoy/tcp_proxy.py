"""The TCP proxy network filter: whole connections to one cluster, or split by weight."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

Share = tuple[str, int]  # (cluster, weight)


def tcp_proxy(stat_prefix: str, shares: Sequence[Share]) -> tcp_proxy_pb2.TcpProxy:
    """Each new connection goes to one cluster, picked by weight; shares of weight 0 are left out
    (Envoy refuses them), so a 100/0 split is a plain single-cluster proxy."""
    used = [(cluster, weight) for cluster, weight in shares if weight > 0]
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    if len(used) == 1:
        proxy.cluster = used[0][0]
        return proxy
    proxy.weighted_clusters.clusters.extend(
        tcp_proxy_pb2.TcpProxy.WeightedCluster.ClusterWeight(name=cluster, weight=weight)
        for cluster, weight in used
    )
    return proxy
