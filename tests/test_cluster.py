"""Cluster translation details that golden files show but do not prove: the serialization fast
path, DNS detection, what external services leave out (EDS), and policy edge values."""

from __future__ import annotations

from typing import TypeVar

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from meshpilot.errors import InconsistentSnapshot
from meshpilot.model import ir, proxies
from meshpilot.netaddr import is_ip
from meshpilot.translator.envoy import cluster
from meshpilot.translator.services import (
    external_domains,
    is_external,
    translate_endpoints,
    translate_service,
    upstream_tls,
)
from meshpilot.translator.translate import Translator
from meshpilot.xds.snapshot import check_consistent
from meshpilot.xds.types import CLUSTER, ENDPOINT

BUSY = ir.TrafficPolicy(
    load_balancer=ir.LoadBalancer("least_request"),
    circuit_breaker=ir.CircuitBreaker(max_connections=10, max_pending_requests=0),
    outlier_detection=ir.OutlierDetection(consecutive_5xx=3, interval_ms=100),
    connect_timeout_ms=250,
)
TLS = ir.UpstreamTls(sni="api.example.com", ca_file="/ca.pem")
M = TypeVar("M", bound=Message)
V1 = ir.Subset("v1", (("version", "v1"),))


def external(*addresses: str, tls: ir.UpstreamTls | None = None) -> ir.Service:
    endpoints = tuple(
        ir.StaticEndpoint(a, 443, (("version", f"v{i + 1}"),)) for i, a in enumerate(addresses)
    )
    route = ir.Route("default", ir.RouteMatch(), (ir.Destination(None),))
    return ir.Service("api", 8443, "http", (V1,), endpoints, (route,), tls=tls)


@pytest.mark.parametrize("policy", [cluster.DEFAULT_POLICY, BUSY])
@pytest.mark.parametrize("tls", [None, TLS, ir.UpstreamTls(verify=False)])
@pytest.mark.parametrize("http2", [False, True])
def test_eds_cluster_bytes_equal_serializing_the_cluster(
    policy: ir.TrafficPolicy, tls: ir.UpstreamTls | None, http2: bool
) -> None:
    for name in ["a", "outbound|9080|v1|reviews", "x" * 300]:
        built = cluster.eds_cluster(name, policy, tls, http2)
        expected = built.SerializeToString(deterministic=True)
        assert cluster.eds_cluster_bytes(name, policy, tls, http2) == expected


def test_the_default_policy_is_the_plain_eds_cluster() -> None:
    plain = cluster.eds_cluster("c", ir.TrafficPolicy())
    assert plain.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert plain.connect_timeout.seconds == 2
    for field in ("circuit_breakers", "outlier_detection", "transport_socket"):
        assert not plain.HasField(field)
    assert not plain.typed_extension_protocol_options


@pytest.mark.parametrize(
    ("address", "ip"),
    [
        ("10.1.2.3", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("fd00::5", True),
        ("localhost", False),
        ("api.example.com", False),
        ("host-1", False),
    ],
)
def test_an_endpoint_is_an_ip_or_a_dns_name(address: str, ip: bool) -> None:
    assert is_ip(address) is ip


def test_one_dns_name_makes_the_whole_service_external() -> None:
    assert not is_external(external("10.0.0.1", "10.0.0.2"))
    assert is_external(external("10.0.0.1", "api.example.com"))


def test_an_external_service_has_dns_clusters_with_no_eds_and_no_assignments() -> None:
    service = external("api.example.com", "10.0.0.9")
    clusters = translate_service(service).clusters
    built = {}
    for res in clusters.resources:
        assert res.refs == frozenset(), "a DNS cluster must not wait for an EDS resource"
        built[res.name] = _unpack(res.entry, cluster_pb2.Cluster())
    members = {
        name: [
            lb.endpoint.address.socket_address.address
            for locality in c.load_assignment.endpoints
            for lb in locality.lb_endpoints
        ]
        for name, c in built.items()
    }
    assert {c.type for c in built.values()} == {cluster_pb2.Cluster.STRICT_DNS}
    assert members == {
        "outbound|8443||api": ["10.0.0.9", "api.example.com"],
        "outbound|8443|v1|api": ["api.example.com"],
    }
    instance = proxies.Instance("api", "127.0.0.5", proxies.INBOUND_PORT, (("version", "v1"),))
    assert translate_endpoints(service, (instance,)).resources == ()


def test_a_view_with_an_external_service_is_consistent() -> None:
    mesh = ir.MeshIR("m", (external("api.example.com"),))
    translator = Translator()
    proxy = proxies.Proxy("api~127.0.0.2", "api", "127.0.0.2", 8080, ())
    view = translator.view(translator.translate(mesh, []), proxy)
    check_consistent(view)
    assert len(view[ENDPOINT]) == 0
    assert {"outbound|8443||api", "outbound|8443|v1|api"} <= set(view[CLUSTER].resources)


def test_external_domains_are_the_endpoint_names_with_and_without_port() -> None:
    service = external("b.example.com", "10.0.0.1", "a.example.com", "b.example.com")
    assert external_domains(service) == [
        "a.example.com",
        "a.example.com:443",
        "b.example.com",
        "b.example.com:443",
    ]
    assert external_domains(external("api", "10.0.0.1")) == ["api:443"]  # `api` is taken


def test_an_external_service_rewrites_host_to_the_endpoint_name() -> None:
    vhost_entry = translate_service(external("api.example.com")).virtual_host_entry
    (vhost,) = route_pb2.RouteConfiguration.FromString(vhost_entry).virtual_hosts
    assert list(vhost.domains) == ["api", "api:8443", "api.example.com", "api.example.com:443"]
    assert all(r.route.auto_host_rewrite.value for r in vhost.routes)


def test_sni_defaults_to_the_one_dns_name_of_the_endpoints() -> None:
    no_sni = ir.UpstreamTls()
    assert upstream_tls(external("api.example.com", "10.0.0.1", tls=no_sni)) == ir.UpstreamTls(
        sni="api.example.com"
    )
    assert upstream_tls(external("a.example.com", "b.example.com", tls=no_sni)) == no_sni
    assert upstream_tls(external("a.example.com", tls=TLS)) == TLS
    assert upstream_tls(external("a.example.com")) is None


def test_tls_verifies_the_sni_unless_verify_is_off() -> None:
    verified = cluster.eds_cluster("c", tls=TLS, http2=True).transport_socket
    context = tls_pb2.UpstreamTlsContext()
    verified.typed_config.Unpack(context)
    validation = context.common_tls_context.validation_context
    assert context.sni == "api.example.com"
    assert validation.trusted_ca.filename == "/ca.pem"
    assert [m.matcher.exact for m in validation.match_typed_subject_alt_names] == [
        "api.example.com"
    ]
    assert list(context.common_tls_context.alpn_protocols) == ["h2"]

    system = tls_pb2.UpstreamTlsContext()
    cluster.eds_cluster("c", tls=ir.UpstreamTls()).transport_socket.typed_config.Unpack(system)
    assert system.common_tls_context.validation_context.trusted_ca.filename == (
        "/etc/ssl/certs/ca-certificates.crt"
    )

    unverified = tls_pb2.UpstreamTlsContext()
    socket = cluster.eds_cluster("c", tls=ir.UpstreamTls(verify=False)).transport_socket
    socket.typed_config.Unpack(unverified)
    assert not unverified.common_tls_context.HasField("validation_context")


def test_a_zero_limit_is_sent_and_an_absent_one_is_not() -> None:
    limits = cluster.circuit_breakers(ir.CircuitBreaker(max_pending_requests=0, max_requests=1))
    threshold = limits.thresholds[0]
    assert threshold.HasField("max_pending_requests") and threshold.max_pending_requests.value == 0
    assert threshold.max_requests.value == 1
    assert not threshold.HasField("max_connections") and not threshold.HasField("max_retries")


def test_outlier_checks_are_enforced_when_given_and_off_at_zero() -> None:
    on = cluster.outlier_detection(ir.OutlierDetection(consecutive_5xx=3))
    assert (on.consecutive_5xx.value, on.enforcing_consecutive_5xx.value) == (3, 100)
    assert not on.HasField("consecutive_gateway_failure")
    assert on.HasField("enforcing_success_rate") and on.enforcing_success_rate.value == 0
    assert on.always_eject_one_host.value is True  # else 10% of a small service is no one

    never = cluster.outlier_detection(ir.OutlierDetection(max_ejection_percent=0))
    assert never.max_ejection_percent.value == 0 and never.always_eject_one_host.value is False

    off = cluster.outlier_detection(
        ir.OutlierDetection(consecutive_5xx=0, consecutive_gateway_errors=2)
    )
    assert off.HasField("enforcing_consecutive_5xx") and off.enforcing_consecutive_5xx.value == 0
    assert off.consecutive_gateway_failure.value == 2
    assert off.enforcing_consecutive_gateway_failure.value == 100


def test_http2_protocol_options_fit_any_cluster() -> None:
    app = cluster_pb2.Cluster(
        name="app", typed_extension_protocol_options=cluster.http2_protocol_options()
    )
    assert list(app.typed_extension_protocol_options) == [cluster.HTTP_PROTOCOL_OPTIONS]


def _unpack(entry: bytes, message: M) -> M:
    """The resource inside an encoded DiscoveryResponse entry."""
    (packed,) = discovery_pb2.DiscoveryResponse.FromString(entry).resources
    packed.Unpack(message)
    return message


@pytest.mark.parametrize(
    ("address", "kind", "family"),
    [
        ("127.0.0.9:9901", cluster_pb2.Cluster.STATIC, cluster_pb2.Cluster.AUTO),
        ("mixer.internal:9901", cluster_pb2.Cluster.STRICT_DNS, cluster_pb2.Cluster.V4_PREFERRED),
    ],
)
def test_the_mixer_cluster_resolves_a_dns_name_and_takes_an_ip_as_is(
    address: str, kind: int, family: int
) -> None:
    built = cluster.mixer_cluster("mixer", address)
    assert (built.type, built.dns_lookup_family) == (kind, family)
    members = built.load_assignment.endpoints[0].lb_endpoints
    host, port = address.rsplit(":", 1)
    assert len(members) == cluster.MIXER_CONNECTIONS
    assert {
        (m.endpoint.address.socket_address.address, m.endpoint.address.socket_address.port_value)
        for m in members
    } == {(host, int(port))}
    assert built.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert list(built.typed_extension_protocol_options) == [cluster.HTTP_PROTOCOL_OPTIONS]


def test_a_route_to_a_subset_the_service_lacks_is_refused() -> None:
    lost = ir.Route("lost", ir.RouteMatch(), (ir.Destination("v9"),))
    with pytest.raises(InconsistentSnapshot, match=r"routes to unknown \['outbound\|80\|v9\|a'\]"):
        translate_service(ir.Service("a", 80, "http", (V1,), routes=(lost,)))
