"""`outbound_port`: a service reached at a port of its own on every caller's sidecar, whatever
the Host; its validation (clashes with the sidecar's ports, apps and other services) and the
listener it gives each caller."""

from __future__ import annotations

import dataclasses

import pytest

from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir, proxies
from meshpilot.translator.build import build_ir
from meshpilot.translator.translate import Translator
from meshpilot.xds.snapshot import check_consistent
from tests.test_listeners import listeners, terminal_filter

CALLER = proxies.Proxy("web~127.0.1.2", "web", "127.0.1.2", 8080, ())


def problems(text: str) -> list[str]:
    with pytest.raises(MeshInvalid) as raised:
        parse_mesh(text, "mesh.yaml")
    return [problem.format() for problem in raised.value.problems]


def test_true_means_the_services_own_port() -> None:
    spec = parse_mesh(
        "mesh: m\nservices:\n  a:\n    port: 9080\n    outbound_port: true\n"
        "  b:\n    port: 9080\n    outbound_port: 19080\n  c:\n    port: 9080\n",
        "mesh.yaml",
    )
    ports = {s.name: s.outbound_port for s in build_ir(spec, secure=False).services}
    assert ports == {"a": 9080, "b": 19080, "c": None}


def test_clashes_are_reported_where_the_port_is_written() -> None:
    text = (
        "mesh: m\n"
        "services:\n"
        "  a: {port: 15001, outbound_port: true}\n"
        "  b: {port: 9080, outbound_port: true}\n"
        "  c: {port: 9080, outbound_port: true}\n"
        "  db: {port: 5432, protocol: tcp, outbound_port: 7000}\n"
        "  d: {port: 80, outbound_port: 5432}\n"
        "  e:\n"
        "    port: 8080\n"
        "    outbound_port: true\n"
        "    run: [{command: app}]\n"
    )
    assert problems(text) == [
        "mesh.yaml:3:35: services.a.outbound_port: port 15001 is used by every sidecar "
        "(15000, 15001, 15006); choose another port",
        "mesh.yaml:5:34: services.c.outbound_port: port 9080 is taken by service 'b' (its "
        "outbound_port); every caller listens on it, so choose another port "
        "(e.g. 'outbound_port: 19080')",
        "mesh.yaml:6:50: services.db.outbound_port: a tcp service is reached at its port "
        "already; 'outbound_port' is for HTTP services",
        "mesh.yaml:7:32: services.d.outbound_port: port 5432 is taken by tcp service 'db'; "
        "every caller listens on it, so choose another port (e.g. 'outbound_port: 19080')",
        "mesh.yaml:10:20: services.e.outbound_port: port 8080 is taken by the app of "
        "services.e.run[0]; every caller listens on it, so choose another port "
        "(e.g. 'outbound_port: 19080')",
    ]


def test_a_caller_routes_the_port_to_the_services_table_whatever_the_host() -> None:
    reviews = ir.Service("reviews", 9080, "http", outbound_port=9080)
    others = (ir.Service("web", 8080, "http"), ir.Service("ratings", 9081, "http"))
    translator = Translator()
    view = translator.view(translator.translate(ir.MeshIR("m", (reviews, *others)), []), CALLER)
    check_consistent(view)
    found = listeners(view)
    assert sorted(found) == ["inbound", "outbound", "outbound_http|9080|reviews"]
    by_port = found["outbound_http|9080|reviews"]
    address = by_port.address.socket_address
    assert (address.address, address.port_value) == ("127.0.1.2", 9080)
    assert terminal_filter(by_port).rds.route_config_name == "outbound|reviews"


def test_the_apps_own_port_is_left_to_the_app() -> None:
    """A sidecar not run by `up` (validation could not see its app port) skips the port."""
    web = ir.Service("web", 8080, "http", outbound_port=8080)
    translator = Translator()
    view = translator.view(translator.translate(ir.MeshIR("m", (web,)), []), CALLER)
    assert sorted(listeners(view)) == ["inbound", "outbound"]
    moved = dataclasses.replace(web, outbound_port=18080)
    view = translator.view(translator.translate(ir.MeshIR("m", (moved,)), []), CALLER)
    assert sorted(listeners(view)) == ["inbound", "outbound", "outbound_http|18080|web"]
