"""Per-proxy listeners: rate limits, TCP services, HTTP/2 apps and mTLS modes, beyond what golden
files show."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from meshpilot.model import ir, proxies
from meshpilot.translator.proxies import proxy_view
from meshpilot.translator.resources import Resource, ResourceSet, decode
from meshpilot.translator.translate import Translator, View
from meshpilot.xds.snapshot import check_consistent
from meshpilot.xds.types import CLUSTER, LISTENER

PROXY = proxies.Proxy("web~127.0.1.2", "web", "127.0.1.2", 8080, ())
LIMIT = ir.RateLimit(requests=5, interval_ms=1000, burst=10)
M = TypeVar("M", bound=Message)


def tcp_service(name: str, port: int, *to: ir.Destination) -> ir.Service:
    subsets = tuple(ir.Subset(v, (("version", v),)) for v in ("v1", "v2"))
    routes = (ir.Route("split", ir.RouteMatch(), to),) if to else ()
    return ir.Service(name, port, "tcp", subsets, routes=routes)


def mesh(*services: ir.Service) -> ir.MeshIR:
    return ir.MeshIR("test", tuple(sorted(services, key=lambda s: s.name)))


def unpack(res: Resource, message: M) -> M:
    """A resource's message (an entry is one `resources` field of a DiscoveryResponse)."""
    discovery_pb2.DiscoveryResponse.FromString(res.entry).resources[0].Unpack(message)
    return message


def listeners(view: dict[str, ResourceSet]) -> dict[str, listener_pb2.Listener]:
    return {
        name: unpack(res, listener_pb2.Listener()) for name, res in view[LISTENER].resources.items()
    }


def terminal_filter(
    listener: listener_pb2.Listener,
) -> tcp_proxy_pb2.TcpProxy | hcm.HttpConnectionManager:
    typed = listener.filter_chains[0].filters[0].typed_config
    message = (
        tcp_proxy_pb2.TcpProxy()
        if typed.Is(tcp_proxy_pb2.TcpProxy.DESCRIPTOR)
        else hcm.HttpConnectionManager()
    )
    typed.Unpack(message)
    return message


def test_a_caller_gets_a_tcp_listener_per_tcp_service_on_its_own_ip() -> None:
    db = tcp_service("db", 5432, ir.Destination("v1", 80), ir.Destination("v2", 20))
    cache = tcp_service("cache", 6379)
    translator = Translator()
    view = translator.view(
        translator.translate(mesh(ir.Service("web", 9080, "http"), db, cache), []), PROXY
    )
    check_consistent(view)
    found = listeners(view)
    assert sorted(found) == [
        "inbound",
        "outbound",
        "outbound_tcp|5432|db",
        "outbound_tcp|6379|cache",
    ]
    to_db = found["outbound_tcp|5432|db"]
    assert (to_db.address.socket_address.address, to_db.address.socket_address.port_value) == (
        "127.0.1.2",
        5432,
    )
    split = terminal_filter(to_db)
    assert isinstance(split, tcp_proxy_pb2.TcpProxy)
    assert [(c.name, c.weight) for c in split.weighted_clusters.clusters] == [
        ("outbound|5432|v1|db", 80),
        ("outbound|5432|v2|db", 20),
    ]
    assert view[LISTENER].resources["outbound_tcp|5432|db"].refs == {
        "outbound|5432|v1|db",
        "outbound|5432|v2|db",
    }
    assert view[LISTENER].resources["outbound_tcp|6379|cache"].refs == {"outbound|6379||cache"}


def test_with_a_local_ip_only_the_inbound_listener_is_on_the_instance_ip() -> None:
    isolated = dataclasses.replace(PROXY, local_ip="127.0.0.1")
    translator = Translator()
    shared = translator.translate(
        mesh(ir.Service("web", 9080, "http"), tcp_service("db", 5432)), []
    )
    view = translator.view(shared, isolated)
    addresses = {
        name: found.address.socket_address.address for name, found in listeners(view).items()
    }
    assert addresses == {
        "inbound": "127.0.1.2",
        "outbound": "127.0.0.1",
        "outbound_tcp|5432|db": "127.0.0.1",
    }
    app = unpack(view[CLUSTER].resources["inbound|8080||"], cluster_pb2.Cluster())
    endpoint = app.load_assignment.endpoints[0].lb_endpoints[0].endpoint
    assert endpoint.address.socket_address.address == "127.0.0.1"


def test_a_weight_of_zero_leaves_a_single_cluster() -> None:
    db = tcp_service("db", 5432, ir.Destination("v1", 100), ir.Destination("v2", 0))
    translator = Translator()
    view = translator.view(translator.translate(mesh(db), []), PROXY)
    proxy = terminal_filter(listeners(view)["outbound_tcp|5432|db"])
    assert isinstance(proxy, tcp_proxy_pb2.TcpProxy)
    assert proxy.cluster == "outbound|5432|v1|db" and not proxy.HasField("weighted_clusters")
    assert view[LISTENER].resources["outbound_tcp|5432|db"].refs == {"outbound|5432|v1|db"}


def test_no_tcp_listener_where_the_app_or_another_tcp_service_holds_the_port() -> None:
    on_app_port = tcp_service("legacy", PROXY.app_port)
    first, second = tcp_service("a-db", 5432), tcp_service("b-db", 5432)
    translator = Translator()
    view = translator.view(translator.translate(mesh(on_app_port, first, second), []), PROXY)
    assert sorted(listeners(view)) == ["inbound", "outbound", "outbound_tcp|5432|a-db"]


def test_the_inbound_listener_of_a_tcp_service_proxies_connections_to_the_app() -> None:
    own = proxies.Proxy("db~127.0.1.3", "db", "127.0.1.3", 5432, ())
    translator = Translator()
    view = translator.view(translator.translate(mesh(tcp_service("db", 5432)), []), own)
    check_consistent(view)
    inbound = terminal_filter(listeners(view)["inbound"])
    assert isinstance(inbound, tcp_proxy_pb2.TcpProxy) and inbound.cluster == "inbound|5432||"
    assert "outbound_tcp|5432|db" not in view[LISTENER]  # its own app holds IP:5432


def test_an_http2_or_grpc_app_is_spoken_to_in_http2() -> None:
    for protocol, http2 in [("http", False), ("http2", True), ("grpc", True)]:
        translator = Translator()
        shared = translator.translate(mesh(ir.Service("web", 9080, protocol)), [])
        res = translator.view(shared, PROXY)[CLUSTER].resources["inbound|8080||"]
        app = unpack(res, cluster_pb2.Cluster())
        assert bool(app.typed_extension_protocol_options) is http2, protocol


def test_local_resources_are_rebuilt_only_when_their_inputs_change() -> None:
    web = ir.Service("web", 9080, "http")
    other = ir.Service("other", 9080, "http")
    translator = Translator()
    first = translator.view(translator.translate(mesh(web, other), []), PROXY)[LISTENER]
    # Equal but new objects for every service, another service edited: the same listeners.
    edited = dataclasses.replace(other, port=9090)
    same = translator.view(translator.translate(mesh(dataclasses.replace(web), edited), []), PROXY)
    assert same[LISTENER] is first
    limited = dataclasses.replace(web, rate_limit=LIMIT)
    changed = translator.view(translator.translate(mesh(limited, edited), []), PROXY)[LISTENER]
    assert changed is not first and changed.version != first.version
    with_tcp = translator.view(
        translator.translate(mesh(limited, edited, tcp_service("db", 5432)), []), PROXY
    )
    assert "outbound_tcp|5432|db" in with_tcp[LISTENER]


def test_a_proxy_whose_service_is_not_in_the_mesh_gets_plain_listeners() -> None:
    stranger = dataclasses.replace(PROXY, service="stranger")
    translator = Translator()
    view = translator.view(
        translator.translate(mesh(ir.Service("web", 9080, "http", rate_limit=LIMIT)), []), stranger
    )
    inbound = decode(view[LISTENER].resources["inbound"])
    manager = inbound["filterChains"][0]["filters"][0]["typedConfig"]
    assert [f["name"] for f in manager["httpFilters"]] == ["envoy.filters.http.router"]


def test_tcp_listeners_follow_edits_of_the_tcp_services() -> None:
    translator = Translator()

    def clusters(*services: ir.Service) -> dict[str, str]:
        """The single cluster of each outbound TCP listener the proxy gets for this mesh."""
        view = translator.view(translator.translate(mesh(*services), []), PROXY)
        found = {n: terminal_filter(x) for n, x in listeners(view).items() if "tcp" in n}
        return {n: p.cluster for n, p in found.items() if isinstance(p, tcp_proxy_pb2.TcpProxy)}

    web = ir.Service("web", 9080, "http")
    db = tcp_service("db", 5432, ir.Destination("v1", 100), ir.Destination("v2", 0))
    assert clusters(web, db) == {"outbound_tcp|5432|db": "outbound|5432|v1|db"}
    moved = tcp_service("db", 5432, ir.Destination("v1", 0), ir.Destination("v2", 100))
    assert clusters(dataclasses.replace(web), moved) == {
        "outbound_tcp|5432|db": "outbound|5432|v2|db"
    }
    cache = tcp_service("cache", 6379)
    assert clusters(web, moved, cache) == {
        "outbound_tcp|5432|db": "outbound|5432|v2|db",
        "outbound_tcp|6379|cache": "outbound|6379||cache",
    }
    as_http = dataclasses.replace(moved, protocol="http")
    assert clusters(web, as_http, cache) == {"outbound_tcp|6379|cache": "outbound|6379||cache"}
    assert clusters(web) == {}


def test_a_view_is_made_from_the_change_it_is_given() -> None:
    """A proxy's own service comes from the `MeshResources` passed in, not from whatever the
    translator translated last: `proxy_view` is a pure function of its arguments."""
    translator = Translator()
    limited = translator.translate(mesh(ir.Service("web", 9080, "http", rate_limit=LIMIT)), [])
    plain = translator.translate(mesh(ir.Service("web", 9080, "http")), [])

    def inbound_filters(view: View) -> list[str]:
        manager = decode(view[LISTENER].resources["inbound"])["filterChains"][0]["filters"][0]
        return [f["name"] for f in manager["typedConfig"]["httpFilters"]]

    assert "envoy.filters.http.local_ratelimit" in inbound_filters(proxy_view(limited, PROXY).view)
    assert inbound_filters(proxy_view(plain, PROXY).view) == ["envoy.filters.http.router"]
    assert "envoy.filters.http.local_ratelimit" in inbound_filters(translator.view(limited, PROXY))


def inbound_of(mode: ir.MtlsMode | None, trust_domain: str | None = "test") -> dict[str, Any]:
    web = ir.Service("web", 9080, "http", spiffe_id="spiffe://test/service/web", mtls=mode)
    secure = dataclasses.replace(mesh(web), trust_domain=trust_domain)
    translator = Translator()
    view = translator.view(translator.translate(secure, []), PROXY)
    inbound: dict[str, Any] = decode(view[LISTENER].resources["inbound"])
    return inbound


def test_strict_mtls_accepts_only_mesh_certificates_on_the_inbound_port() -> None:
    (chain,) = inbound_of("strict")["filterChains"]
    tls = chain["transportSocket"]["typedConfig"]
    assert tls["requireClientCertificate"] is True
    validation = tls["commonTlsContext"]["combinedValidationContext"]
    (san,) = validation["defaultValidationContext"]["matchTypedSubjectAltNames"]
    assert san == {"sanType": "URI", "matcher": {"prefix": "spiffe://test/"}}
    assert validation["validationContextSdsSecretConfig"]["name"] == "ROOTCA"
    assert "filterChainMatch" not in chain


def test_permissive_mtls_also_accepts_plaintext_with_the_same_filters() -> None:
    inbound = inbound_of("permissive")
    secure, plain = inbound["filterChains"]
    assert secure["filterChainMatch"] == {"transportProtocol": "tls"}
    assert "transportSocket" in secure and "transportSocket" not in plain
    assert secure["filters"] == plain["filters"]
    assert [f["name"] for f in inbound["listenerFilters"]] == [
        "envoy.filters.listener.tls_inspector"
    ]


def test_without_identity_the_inbound_port_is_plaintext() -> None:
    (chain,) = inbound_of(None, trust_domain=None)["filterChains"]
    assert "transportSocket" not in chain


def test_only_the_app_is_trusted_with_x_envoy_request_headers() -> None:
    """The outbound port trusts callers from the app's IP or loopback (by their connection's
    address: use_remote_address); the inbound port trusts nobody, so Envoy strips the headers."""
    translator = Translator()
    view = translator.view(translator.translate(mesh(ir.Service("web", 9080, "http")), []), PROXY)
    found = listeners(view)
    outbound, inbound = terminal_filter(found["outbound"]), terminal_filter(found["inbound"])
    assert isinstance(outbound, hcm.HttpConnectionManager)
    assert isinstance(inbound, hcm.HttpConnectionManager)
    trusted = [
        (r.address_prefix, r.prefix_len.value) for r in outbound.internal_address_config.cidr_ranges
    ]
    assert trusted == [("127.0.1.2", 32), ("127.0.0.1", 32), ("::1", 128)]
    assert outbound.use_remote_address.value and outbound.skip_xff_append
    assert inbound.HasField("internal_address_config")
    assert list(inbound.internal_address_config.cidr_ranges) == []
    assert not inbound.use_remote_address.value
