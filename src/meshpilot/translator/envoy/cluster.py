"""Cluster builders: the outbound clusters of a service (EDS, or STRICT_DNS for an external
service) with its traffic policy, and one static cluster for the local app."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from google.protobuf import any_pb2, wrappers_pb2

from meshpilot.model import ir
from meshpilot.netaddr import is_ip
from meshpilot.translator.envoy.common import ads_config_source, duration, socket_address, typed
from meshpilot.translator.envoy.endpoint import cluster_load_assignment
from meshpilot.translator.envoy.mtls import upstream_mtls
from meshpilot.translator.envoy.tls import upstream_tls_transport_socket
from meshpilot.translator.envoy.wire import string_field

CONNECT_TIMEOUT_MS = 2000
DEFAULT_POLICY = ir.TrafficPolicy()
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# Envoy's ejection enforcement is a percentage: 100 = always eject once the threshold is hit.
ENFORCE_ALWAYS = 100
_EDS = cluster_pb2.Cluster.DiscoveryType.Value("EDS")
MIXER_CONNECTIONS = 8  # per sidecar; see mixer_cluster
MIXER_CONNECTION_DURATION_S = 60
_STATIC = cluster_pb2.Cluster.DiscoveryType.Value("STATIC")
_STRICT_DNS = cluster_pb2.Cluster.DiscoveryType.Value("STRICT_DNS")
_V4_PREFERRED = cluster_pb2.Cluster.DnsLookupFamily.Value("V4_PREFERRED")
_DEFAULT_PRIORITY = base_pb2.RoutingPriority.Value("DEFAULT")
_LB_POLICIES: dict[str, int] = {
    "round_robin": cluster_pb2.Cluster.LbPolicy.Value("ROUND_ROBIN"),
    "least_request": cluster_pb2.Cluster.LbPolicy.Value("LEAST_REQUEST"),
    "random": cluster_pb2.Cluster.LbPolicy.Value("RANDOM"),
    "ring_hash": cluster_pb2.Cluster.LbPolicy.Value("RING_HASH"),
    "maglev": cluster_pb2.Cluster.LbPolicy.Value("MAGLEV"),
}


def lb_policy(balancer: ir.LoadBalancer) -> int:
    """The enum value; ring_hash and maglev hash on what the route's hash_policy names."""
    return _LB_POLICIES[balancer.policy]


def circuit_breakers(limits: ir.CircuitBreaker) -> circuit_breaker_pb2.CircuitBreakers:
    """Limits for DEFAULT priority traffic; a limit left out keeps Envoy's default (1024, 3
    retries). Requests over a limit fail at once with 503 and `x-envoy-overloaded: true`."""
    thresholds = circuit_breaker_pb2.CircuitBreakers.Thresholds(priority=_DEFAULT_PRIORITY)
    for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        value = getattr(limits, field)
        if value is not None:
            getattr(thresholds, field).value = value
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[thresholds])


def outlier_detection(
    detection: ir.OutlierDetection,
) -> outlier_detection_pb2.OutlierDetection:
    """Ejection on consecutive errors only (success-rate ejection is off). A count of 0 turns
    that check off; a check left out keeps Envoy's default (5xx: 5, gateway errors: off).
    One member can always be ejected, even where `max_ejection_percent` (Envoy's default: 10)
    of the members is less than one; `max_ejection_percent: 0` turns ejection off."""
    result = outlier_detection_pb2.OutlierDetection(
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0),
        always_eject_one_host=wrappers_pb2.BoolValue(value=detection.max_ejection_percent != 0),
    )
    if detection.consecutive_5xx is not None:
        result.consecutive_5xx.value = detection.consecutive_5xx
        result.enforcing_consecutive_5xx.value = ENFORCE_ALWAYS if detection.consecutive_5xx else 0
    if detection.consecutive_gateway_errors:
        result.consecutive_gateway_failure.value = detection.consecutive_gateway_errors
        result.enforcing_consecutive_gateway_failure.value = ENFORCE_ALWAYS
    if detection.interval_ms is not None:
        result.interval.CopyFrom(duration(detection.interval_ms))
    if detection.base_ejection_time_ms is not None:
        result.base_ejection_time.CopyFrom(duration(detection.base_ejection_time_ms))
    if detection.max_ejection_percent is not None:
        result.max_ejection_percent.value = detection.max_ejection_percent
    return result


def http2_protocol_options(max_connection_duration_s: int = 0) -> dict[str, any_pb2.Any]:
    """`typed_extension_protocol_options` for a cluster that speaks HTTP/2 (cleartext or over
    TLS) to its members: `Cluster(..., typed_extension_protocol_options=http2_protocol_options())`.
    A non-zero `max_connection_duration_s` has Envoy drain and replace connections that old.
    """
    common = protocol_pb2.HttpProtocolOptions()
    if max_connection_duration_s:
        common.max_connection_duration.FromSeconds(max_connection_duration_s)
    return http_protocol_options(True, common)


def http_protocol_options(
    http2: bool, common: protocol_pb2.HttpProtocolOptions
) -> dict[str, any_pb2.Any]:
    """HTTP/2 or HTTP/1.1 to the members (Envoy wants one said when options are given), with
    the `common` settings of every connection (idle timeout, requests per connection...)."""
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if http2:
        explicit.http2_protocol_options.SetInParent()
    else:
        explicit.http_protocol_options.SetInParent()
    options = http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config=explicit)
    if common.ByteSize():
        options.common_http_protocol_options.CopyFrom(common)
    return {HTTP_PROTOCOL_OPTIONS: typed(options)}


def connection_settings(policy: ir.TrafficPolicy) -> protocol_pb2.HttpProtocolOptions:
    """What the policy says of each HTTP connection to a member (empty: Envoy's defaults, an
    idle timeout of 1 h and no limit of requests)."""
    common = protocol_pb2.HttpProtocolOptions()
    if policy.idle_timeout_ms is not None:
        common.idle_timeout.CopyFrom(duration(policy.idle_timeout_ms))
    limits = policy.circuit_breaker
    if limits is not None and limits.max_requests_per_connection is not None:
        common.max_requests_per_connection.value = limits.max_requests_per_connection
    return common


def tcp_keepalive(keepalive: ir.TcpKeepalive) -> address_pb2.TcpKeepalive:
    """SO_KEEPALIVE on; a setting left out keeps the system's (Linux: 2 h, 75 s, 9 probes)."""
    result = address_pb2.TcpKeepalive()
    if keepalive.time_s is not None:
        result.keepalive_time.value = keepalive.time_s
    if keepalive.interval_s is not None:
        result.keepalive_interval.value = keepalive.interval_s
    if keepalive.probes is not None:
        result.keepalive_probes.value = keepalive.probes
    return result


def slow_start(balancer: ir.LoadBalancer, result: cluster_pb2.Cluster) -> None:
    """A member added after the cluster starts gets a share growing (linearly, from 10 %) to
    a full one over `warmup`: new instances are not flooded while they warm up."""
    if balancer.warmup_ms is None:
        return
    window = cluster_pb2.Cluster.SlowStartConfig(slow_start_window=duration(balancer.warmup_ms))
    if balancer.policy == "least_request":
        result.least_request_lb_config.slow_start_config.CopyFrom(window)
    else:
        result.round_robin_lb_config.slow_start_config.CopyFrom(window)


def distributes(balancer: ir.LoadBalancer) -> bool:
    """Whether callers' shares of localities follow `locality.distribute`."""
    setting = balancer.locality
    return setting is not None and setting.enabled and bool(setting.distribute)


def upstream_settings(
    policy: ir.TrafficPolicy,
    tls: ir.UpstreamTls | None = None,
    http2: bool = False,
    peer: str | None = None,
) -> cluster_pb2.Cluster:
    """The fields every outbound cluster has whatever its discovery type: a partial Cluster
    to merge into one. The defaults give round robin, no limits of ours and a 2 s timeout.
    With a `peer` SPIFFE ID, mTLS that requires the members to be that workload."""
    common = connection_settings(policy)
    result = cluster_pb2.Cluster(
        lb_policy=lb_policy(policy.load_balancer),
        connect_timeout=duration(policy.connect_timeout_ms or CONNECT_TIMEOUT_MS),
        typed_extension_protocol_options=(
            http_protocol_options(http2, common) if http2 or common.ByteSize() else None
        ),
    )
    slow_start(policy.load_balancer, result)
    if distributes(policy.load_balancer):
        # Envoy honours the locality weights of the assignment only when told to.
        result.common_lb_config.locality_weighted_lb_config.SetInParent()
    if policy.tcp_keepalive is not None:
        result.upstream_connection_options.tcp_keepalive.CopyFrom(
            tcp_keepalive(policy.tcp_keepalive)
        )
    if policy.circuit_breaker is not None:
        result.circuit_breakers.CopyFrom(circuit_breakers(policy.circuit_breaker))
    if policy.outlier_detection is not None:
        result.outlier_detection.CopyFrom(outlier_detection(policy.outlier_detection))
        # Envoy delays health changes by up to 1 s to merge them; an ejection takes effect now.
        result.common_lb_config.update_merge_window.CopyFrom(duration(0))
        panic_below = policy.outlier_detection.min_health_percent
        if panic_below is not None:
            result.common_lb_config.healthy_panic_threshold.value = panic_below
    if tls is not None:
        result.transport_socket.CopyFrom(upstream_tls_transport_socket(tls, http2))
    elif peer is not None:
        result.transport_socket.CopyFrom(upstream_mtls(peer, http2))
    return result


def eds_cluster(
    name: str,
    policy: ir.TrafficPolicy = DEFAULT_POLICY,
    tls: ir.UpstreamTls | None = None,
    http2: bool = False,
    peer: str | None = None,
) -> cluster_pb2.Cluster:
    """A cluster whose members arrive over EDS under the cluster's own name."""
    result = cluster_pb2.Cluster(name=name, type=_EDS)
    result.eds_cluster_config.eds_config.CopyFrom(ads_config_source())
    result.MergeFrom(upstream_settings(policy, tls, http2, peer))
    return result


def eds_cluster_bytes(
    name: str,
    policy: ir.TrafficPolicy = DEFAULT_POLICY,
    tls: ir.UpstreamTls | None = None,
    http2: bool = False,
    peer: str | None = None,
) -> bytes:
    """`eds_cluster(...)` serialized: the name (field 1, written first) before a shared tail.

    EDS clusters with the same settings differ only in their name; this is byte-for-byte what
    serializing `eds_cluster(...)` gives, at a fraction of the cost for 30,000 clusters.
    """
    if tls is None and not http2 and peer is None and policy == DEFAULT_POLICY:
        return string_field(1, name) + _DEFAULT_EDS_CLUSTER_WITHOUT_NAME
    return string_field(1, name) + _eds_cluster_without_name(policy, tls, http2, peer)


@functools.lru_cache(maxsize=4096)
def _eds_cluster_without_name(
    policy: ir.TrafficPolicy, tls: ir.UpstreamTls | None, http2: bool, peer: str | None
) -> bytes:
    tail: bytes = eds_cluster("", policy, tls, http2, peer).SerializeToString(deterministic=True)
    return tail


_DEFAULT_EDS_CLUSTER_WITHOUT_NAME = _eds_cluster_without_name(DEFAULT_POLICY, None, False, None)


def dns_cluster(
    name: str,
    members: Iterable[tuple[str, int]],
    policy: ir.TrafficPolicy = DEFAULT_POLICY,
    tls: ir.UpstreamTls | None = None,
    http2: bool = False,
) -> cluster_pb2.Cluster:
    """An external service: members are host names that Envoy resolves itself (every address
    each name has is a member; IPv4 preferred), listed inline rather than sent over EDS."""
    result = cluster_pb2.Cluster(
        name=name,
        type=_STRICT_DNS,
        dns_lookup_family=_V4_PREFERRED,
        load_assignment=cluster_load_assignment(name, members),
    )
    result.MergeFrom(upstream_settings(policy, tls, http2))
    return result


def static_cluster(name: str, ip: str, port: int, http2: bool = False) -> cluster_pb2.Cluster:
    """A cluster with one fixed member: how the inbound listener reaches the local app (in
    HTTP/2 when `http2`: the app's service is http2 or grpc)."""
    return cluster_pb2.Cluster(
        name=name,
        type=_STATIC,
        connect_timeout=duration(CONNECT_TIMEOUT_MS),
        load_assignment=_repeated_member(name, ip, port, 1),
        typed_extension_protocol_options=http2_protocol_options() if http2 else None,
    )


def _repeated_member(
    name: str, host: str, port: int, copies: int
) -> endpoint_pb2.ClusterLoadAssignment:
    """One locality listing `host:port` `copies` times (Envoy keeps a connection pool each)."""
    member = endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(host, port))
    )
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[member] * copies)],
    )


def mixer_cluster(name: str, address: str, peer: str | None = None) -> cluster_pb2.Cluster:
    """How sidecars reach the mixer (ext_authz checks, access logs): gRPC, so HTTP/2.

    Envoy sends every call to one host over one HTTP/2 connection, and SO_REUSEPORT spreads the
    mixer's connections over its workers, not its calls. So the address is listed
    MIXER_CONNECTIONS times: Envoy keeps that many connections, and least-request balancing
    sends each call to a connection with the fewest calls in flight, which favours connections
    to idle workers over those to a busy one. Connections are replaced every
    MIXER_CONNECTION_DURATION_S, so that they spread again over workers that (re)started later
    than others."""
    result = _fixed_address_cluster(name, address, MIXER_CONNECTIONS)
    result.MergeFrom(
        cluster_pb2.Cluster(
            lb_policy=_LB_POLICIES["least_request"],
            typed_extension_protocol_options=http2_protocol_options(MIXER_CONNECTION_DURATION_S),
        )
    )
    if peer is not None:
        result.transport_socket.CopyFrom(upstream_mtls(peer, http2=True))
    return result


def collector_cluster(name: str, address: str, grpc: bool = False) -> cluster_pb2.Cluster:
    """How sidecars reach the trace collector, in plaintext (a collector such as Zipkin, Jaeger
    or an OpenTelemetry collector is not a workload of the mesh): HTTP/1.1 POSTs of span
    batches, or with `grpc` OTLP calls over HTTP/2."""
    result = _fixed_address_cluster(name, address, 1)
    if grpc:
        result.MergeFrom(
            cluster_pb2.Cluster(typed_extension_protocol_options=http2_protocol_options())
        )
    return result


def _fixed_address_cluster(name: str, address: str, copies: int) -> cluster_pb2.Cluster:
    """A cluster of one `HOST:PORT` (listed `copies` times): an IP as it is, a DNS name
    resolved by Envoy (IPv4 preferred)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    result = cluster_pb2.Cluster(
        name=name,
        type=_STATIC if is_ip(host) else _STRICT_DNS,
        connect_timeout=duration(CONNECT_TIMEOUT_MS),
        load_assignment=_repeated_member(name, host, int(port), copies),
    )
    if not is_ip(host):
        result.dns_lookup_family = _V4_PREFERRED
    return result
