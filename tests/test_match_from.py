"""Routes that match the caller (`match.from`, Istio's sourceLabels): the mesh file's form and
problems (placed), and the route tables sidecars get: each holds the routes that apply to it,
and sidecars that make the same choice share one set of tables."""

from __future__ import annotations

import dataclasses

from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir, proxies
from meshpilot.translator.build import build_ir
from meshpilot.translator.envoy import http_filters, inbound_route, route
from meshpilot.translator.resources import decode
from meshpilot.translator.translate import MeshResources, Translator
from meshpilot.xds.snapshot import check_consistent
from meshpilot.xds.types import ROUTE
from tests.test_mesh_load import problems

MESH = """\
mesh: m
services:
  web: {port: 8080}
  ratings: {port: 9081}
  reviews:
    port: 9080
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: from-web
        match: {from: {service: web}}
        to: [{subset: v2}]
      - name: from-canaries
        match: {path_prefix: /api, from: {labels: {track: canary}}}
        to: [{subset: v2}]
      - name: rest
        to: [{subset: v1}]
        rate_limit: {rate: 5 per 1s}
"""


def proxy(service: str, labels: dict[str, str] | None = None, n: int = 2) -> proxies.Proxy:
    ip = f"127.0.1.{n}"
    return proxies.Proxy(f"{service}~{ip}", service, ip, 8080, ir.labels_of(labels or {}))


def reviews_routes(shared: MeshResources, translator: Translator, caller: proxies.Proxy) -> list:
    view = translator.view(shared, caller)
    check_consistent(view)
    table = view[ROUTE].get("outbound|reviews")
    assert table is not None
    (host,) = decode(table)["virtualHosts"]
    return [r["name"] for r in host["routes"]]


def test_the_caller_is_in_the_ir() -> None:
    routes = build_ir(parse_mesh(MESH, "mesh.yaml")).service("reviews")
    assert routes is not None
    assert [r.match.caller for r in routes.routes] == [
        ir.Caller("web"),
        ir.Caller(None, (("track", "canary"),)),
        None,
    ]
    assert ir.Caller("web", (("version", "v1"),)).matches("web", (("a", "b"), ("version", "v1")))
    assert not ir.Caller("web", (("version", "v1"),)).matches("web", (("version", "v2"),))
    assert not ir.Caller("web").matches("ratings", ())


def test_each_sidecar_gets_the_routes_that_apply_to_it() -> None:
    translator = Translator()
    shared = translator.translate(build_ir(parse_mesh(MESH, "mesh.yaml")), [])
    web, canary = proxy("web"), proxy("ratings", {"track": "canary"}, 3)
    assert reviews_routes(shared, translator, web) == ["reviews/from-web", "reviews/rest"]
    assert reviews_routes(shared, translator, canary) == ["reviews/from-canaries", "reviews/rest"]
    assert reviews_routes(shared, translator, proxy("ratings", n=4)) == ["reviews/rest"]
    both = proxy("web", {"track": "canary"}, 5)
    assert reviews_routes(shared, translator, both) == [
        "reviews/from-web",
        "reviews/from-canaries",
        "reviews/rest",
    ]


def test_sidecars_that_make_the_same_choice_share_one_set_across_changes() -> None:
    translator = Translator()
    mesh = build_ir(parse_mesh(MESH, "mesh.yaml"))
    shared = translator.translate(mesh, [])
    first, second = proxy("web", n=2), proxy("web", {"version": "v9"}, 3)
    plain = proxy("ratings", n=4)
    routes = translator.view(shared, first)[ROUTE]
    assert translator.view(shared, second)[ROUTE] is routes
    assert translator.view(shared, plain)[ROUTE] is shared.full.routes  # nothing applies
    assert routes is not shared.full.routes
    again = translator.translate(mesh, [])  # a change that leaves the services as they were
    assert translator.view(again, first)[ROUTE] is routes


def test_the_destination_leaves_routes_that_match_callers_out() -> None:
    """It cannot tell callers' labels: the rate-limited route is its first."""
    reviews = build_ir(parse_mesh(MESH, "mesh.yaml")).service("reviews")
    assert reviews is not None
    forward = route.forward_all_virtual_host("x", "app").routes[0].route
    found = inbound_route.configured_routes(reviews, forward, http_filters.INBOUND_ROUTES)
    assert [r.name for r in found] == ["reviews/rest"]


def test_caller_problems() -> None:
    text = MESH.replace("{service: web}", "{service: wbe}").replace(
        "{labels: {track: canary}}", "{}"
    )
    assert problems(text) == [
        "mesh.yaml:10:33: services.reviews.routes[0].match.from.service: unknown service "
        "'wbe'; did you mean 'web'?",
        "mesh.yaml:13:42: services.reviews.routes[1].match.from: give 'service', 'labels' or both",
    ]


def test_a_route_that_matches_callers_has_no_rate_limit_of_its_own() -> None:
    text = MESH.replace(
        "        to: [{subset: v2}]\n      - name: from-canaries",
        "        rate_limit: {rate: 1 per 1s}\n      - name: from-canaries",
    )
    assert problems(text) == [
        "mesh.yaml:11:9: services.reviews.routes[0].rate_limit: a route's own rate limit is "
        "counted at the destination, which cannot tell which callers 'match.from' names; "
        "limit the service instead",
    ]


def test_a_gateway_and_a_proxyless_client_get_the_routes_no_caller_rule_limits() -> None:
    text = MESH.replace("    port: 9080\n", "    port: 9080\n    protocol: http2\n")
    text += "gateways:\n  ingress:\n    listen: 127.0.0.1:8000\n    hosts: {'*': reviews}\n"
    translator = Translator()
    shared = translator.translate(build_ir(parse_mesh(text, "mesh.yaml")), [])
    gateway = dataclasses.replace(proxy("ingress"), gateway=True)
    client = dataclasses.replace(proxy("web", n=3), proxyless=True)  # web: named by a rule
    for viewer in (gateway, client):
        (table,) = translator.view(shared, viewer)[ROUTE].resources.values()
        (host,) = decode(table)["virtualHosts"]
        assert [r["name"] for r in host["routes"]] == ["reviews/rest"], viewer
