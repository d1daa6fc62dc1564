"""`gateways:`: validation with locations, the IR, the node a gateway connects as and the view
it is served (its listener, its route table by Host and path, the services it sends to)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import struct_pb2

from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir, proxies
from meshpilot.translator.build import build_ir
from meshpilot.translator.translate import Translator
from meshpilot.xds.node import BadNode, proxy_from_node
from meshpilot.xds.snapshot import check_consistent
from meshpilot.xds.types import CLUSTER, ROUTE
from tests.test_listeners import listeners, terminal_filter, unpack

MESH = """\
mesh: m
services:
  web: {port: 8080}
  reviews:
    port: 9080
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - {name: split, to: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]}
  db: {port: 5432, protocol: tcp}
gateways:
  ingress:
    listen: 127.0.0.1:8000
    hosts:
      shop.example: web
      api.example:
        - {path_prefix: /reviews, service: reviews}
        - {service: web}
"""
GATEWAY = proxies.Proxy("ingress~127.0.1.9", "ingress", "127.0.1.9", 8080, (), gateway=True)


def problems(text: str) -> list[str]:
    with pytest.raises(MeshInvalid) as raised:
        parse_mesh(text, "mesh.yaml")
    return [problem.format() for problem in raised.value.problems]


def test_problems_are_reported_where_they_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the mesh file's folder: where its files are looked for
    text = (
        "mesh: m\n"
        "services:\n"
        "  web: {port: 8080}\n"
        "  db: {port: 5432, protocol: tcp}\n"
        "gateways:\n"
        "  web: {listen: 127.0.0.1:8000, hosts: {a: web}}\n"
        "  edge:\n"
        "    listen: 127.0.0.1:8000\n"
        "    hosts: {a: wbe, b: [{service: db}]}\n"
        "    tls: {cert: missing.pem, key: missing.key}\n"
        "  other: {listen: localhost:80, hosts: {a: web}}\n"
        "  admin: {listen: 127.0.0.1:15000, hosts: {a: web}}\n"
        "policies:\n"
        "  - {name: p, service: web, action: allow, from: [edge, nobody]}\n"
    )
    assert problems(text) == [
        "mesh.yaml:6:3: gateways.web: 'web' names a service too; a gateway's name is its own "
        "identity (a policy's source), so choose another",
        "mesh.yaml:8:13: gateways.edge.listen: gateway 'web' already listens at '127.0.0.1:8000'",
        "mesh.yaml:9:16: gateways.edge.hosts.a: unknown service 'wbe'; did you mean 'web'?",
        "mesh.yaml:9:35: gateways.edge.hosts.b[0].service: 'db' is a tcp service; a gateway "
        "routes HTTP requests",
        "mesh.yaml:10:17: gateways.edge.tls.cert: 'missing.pem' does not exist",
        "mesh.yaml:10:35: gateways.edge.tls.key: 'missing.key' does not exist",
        "mesh.yaml:11:19: gateways.other.listen: 'localhost:80' is not IP:PORT "
        "(e.g. 127.0.0.1:8000)",
        "mesh.yaml:12:19: gateways.admin.listen: '127.0.0.1:15000': ports 15000, 15001, 15006 "
        "are the proxies' own; choose another port",
        "mesh.yaml:14:57: policies[0].from[1]: unknown service 'nobody'",
    ]


def test_the_ir_has_hosts_by_name_and_tls_files_next_to_the_mesh(tmp_path: Path) -> None:
    text = MESH + "    tls: {cert: certs/gw.pem, key: certs/gw.key}\n"
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "gw.pem").write_text("x")
    (tmp_path / "certs" / "gw.key").write_text("x")
    spec = parse_mesh(text, str(tmp_path / "mesh.yaml"))
    (gateway,) = build_ir(spec, tmp_path, secure=False).gateways
    assert gateway == ir.Gateway(
        "ingress",
        "127.0.0.1",
        8000,
        (
            ir.GatewayHost(
                "api.example",
                (ir.GatewayRoute("reviews", "/reviews"), ir.GatewayRoute("web")),
            ),
            ir.GatewayHost("shop.example", (ir.GatewayRoute("web"),)),
        ),
        (str(tmp_path / "certs/gw.pem"), str(tmp_path / "certs/gw.key")),
    )
    assert gateway.services == ("reviews", "web")


def node(metadata: dict[str, object]) -> base_pb2.Node:
    built = base_pb2.Node(id="ingress~127.0.1.9", cluster="ingress")
    built.metadata.CopyFrom(struct_pb2.Struct())
    built.metadata.update(metadata)
    return built


def test_a_gateway_node_is_no_instance_of_a_service() -> None:
    proxy = proxy_from_node(node({"service": "ingress", "ip": "127.0.1.9", "gateway": True}))
    assert proxy.gateway and proxy.instance is None
    with pytest.raises(BadNode, match=r"metadata\.gateway must be true or false"):
        proxy_from_node(node({"service": "ingress", "ip": "127.0.1.9", "gateway": "yes"}))


def test_the_gateway_view_routes_hosts_and_paths_through_the_services_routes() -> None:
    translator = Translator()
    mesh = build_ir(parse_mesh(MESH, "mesh.yaml"), secure=False)
    view = translator.view(translator.translate(mesh, []), GATEWAY)
    check_consistent(view)
    (gateway,) = listeners(view).values()
    address = gateway.address.socket_address
    assert (gateway.name, address.address, address.port_value) == (
        "gateway|ingress",
        "127.0.0.1",
        8000,
    )
    manager = terminal_filter(gateway)
    assert manager.rds.route_config_name == "gateway|ingress"
    assert manager.strip_any_host_port
    (table_resource,) = view[ROUTE].resources.values()
    table = unpack(table_resource, route_pb2.RouteConfiguration())
    hosts = {v.domains[0]: v.routes for v in table.virtual_hosts}
    assert sorted(hosts) == ["api.example", "shop.example"]
    to_reviews, to_web = hosts["api.example"]
    assert [h.name for h in to_reviews.match.headers] == [":path"]
    assert to_reviews.match.headers[0].string_match.prefix == "/reviews"
    weights = {c.name: c.weight.value for c in to_reviews.route.weighted_clusters.clusters}
    assert weights == {"outbound|9080|v1|reviews": 90, "outbound|9080|v2|reviews": 10}
    assert to_web.route.cluster == "outbound|8080||web" and not to_web.match.headers
    # Only the services it sends to: no db, no cluster of its own app (it has none).
    assert not any("db" in name or "inbound" in name for name in view[CLUSTER].resources)


def test_tls_at_the_edge_uses_the_files(tmp_path: Path) -> None:
    for name in ("gw.pem", "gw.key"):
        (tmp_path / name).write_text("x")
    text = MESH + f"    tls: {{cert: {tmp_path}/gw.pem, key: {tmp_path}/gw.key}}\n"
    translator = Translator()
    mesh = build_ir(parse_mesh(text, "mesh.yaml"), secure=False)
    (gateway,) = listeners(translator.view(translator.translate(mesh, []), GATEWAY)).values()
    context = tls_pb2.DownstreamTlsContext()
    gateway.filter_chains[0].transport_socket.typed_config.Unpack(context)
    (certificate,) = context.common_tls_context.tls_certificates
    assert certificate.certificate_chain.filename == f"{tmp_path}/gw.pem"
    assert certificate.private_key.filename == f"{tmp_path}/gw.key"


def test_an_undeclared_gateway_gets_no_listener() -> None:
    translator = Translator()
    mesh = build_ir(parse_mesh(MESH.split("gateways:")[0], "mesh.yaml"), secure=False)
    view = translator.view(translator.translate(mesh, []), GATEWAY)
    assert listeners(view) == {}
