"""Locality-aware load balancing: matching localities, the groups a caller sees (failover
priorities, distribute weights), per-locality endpoint sets, the sidecar's `--locality` and
the mesh file's validation."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from meshpilot.bootstrap import BadSidecarOption, node, sidecar_identity
from meshpilot.grpc_bootstrap import grpc_bootstrap
from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir, proxies
from meshpilot.model.locality import (
    Distribute,
    Group,
    Locality,
    LocalityLb,
    for_caller,
    groups,
    matches,
)
from meshpilot.runner.up import plan_replicas
from meshpilot.translator.build import build_ir
from meshpilot.translator.envoy import cluster
from meshpilot.translator.resources import ResourceSet, decode
from meshpilot.translator.translate import Translator
from meshpilot.xds.node import BadNode, proxy_from_node
from meshpilot.xds.types import CLUSTER, ENDPOINT

HOME = Locality("eu-west", "a")
DETECTION = "outlier_detection: {consecutive_5xx: 3}"


def test_rules_match_like_istios_and_empty_or_star_levels_match_anything() -> None:
    assert matches(HOME, "eu-west")
    assert matches(HOME, "eu-west/a/*")
    assert matches(HOME, "*")
    assert not matches(HOME, "eu-west/b")
    assert not matches(HOME, "us-east/*")
    assert matches(None, "*") and not matches(None, "eu-west")


PLACED = [
    ("10.0.0.1", 1, Locality("eu-west", "a")),
    ("10.0.0.2", 1, Locality("eu-west", "a", "x")),
    ("10.0.0.3", 1, Locality("eu-west", "b")),
    ("10.0.0.4", 1, Locality("us-east", "a")),
    ("10.0.0.5", 1, Locality("ap-south", "a")),
    ("10.0.0.6", 1, None),
]


def priorities(seen: list[Group]) -> dict[str, int]:
    return {str(g.locality or ""): g.priority for g in seen}


def test_failover_orders_subzone_zone_region_failover_region_then_the_rest_without_gaps() -> None:
    setting = LocalityLb(failover=(("eu-west", "us-east"),))
    seen = for_caller(groups(PLACED), HOME, setting, failover=True)
    assert priorities(seen) == {
        "eu-west/a": 0,
        "eu-west/a/x": 1,
        "eu-west/b": 2,
        "us-east/a": 3,
        "ap-south/a": 4,
        "": 4,
    }
    without_failover_region = for_caller(groups(PLACED), HOME, LocalityLb(), failover=True)
    assert priorities(without_failover_region)["us-east/a"] == 3  # gap closed: same as others


def test_no_priorities_without_outlier_detection_or_when_disabled() -> None:
    found = groups(PLACED)
    assert for_caller(found, HOME, LocalityLb(), failover=False) == found
    assert for_caller(found, HOME, LocalityLb(enabled=False), failover=True) == found
    assert {g.priority for g in found} == {0}


def test_distribute_splits_a_share_by_group_size_and_drops_unnamed_localities() -> None:
    rule = Distribute("eu-west/a", (("eu-west/a/*", 60), ("eu-west/b", 40)))
    setting = LocalityLb(distribute=(Distribute("us-east", (("*", 100),)), rule))
    seen = for_caller(groups(PLACED), HOME, setting, failover=True)
    weights = {str(g.locality): g.weight for g in seen}
    assert weights == {"eu-west/a": 30, "eu-west/a/x": 30, "eu-west/b": 40}
    assert {g.priority for g in seen} == {0}  # distribute replaces failover
    abroad = for_caller(groups(PLACED), Locality("ap-south"), setting, failover=True)
    assert abroad == groups(PLACED)  # no rule for this caller, and no failover either (Istio)


MESH = """
mesh: m
services:
  web: {port: 80}
  reviews:
    port: 9080
    %s
    subsets: {v1: {version: v1}}
    endpoints:
      - {address: 10.0.0.1, port: 15006, labels: {version: v1}, locality: eu-west/a}
      - {address: 10.0.0.2, port: 15006, labels: {version: v1}, locality: eu-west/b}
"""


def caller(locality: Locality | None = HOME) -> proxies.Proxy:
    return proxies.Proxy("web~127.0.1.2", "web", "127.0.1.2", 8080, (), locality=locality)


def endpoint_view(translator: Translator, mesh: ir.MeshIR, proxy: proxies.Proxy) -> ResourceSet:
    return translator.view(translator.translate(mesh, []), proxy)[ENDPOINT]


def assignment(endpoints: ResourceSet, name: str) -> dict[str, Any]:
    """The assignment as Envoy JSON."""
    found = endpoints.get(name)
    assert found is not None, name
    decoded: dict[str, Any] = decode(found)
    return decoded


def by_priority(found: dict[str, Any]) -> dict[int, str]:
    return {e.get("priority", 0): e["locality"]["zone"] for e in found["endpoints"]}


def test_a_caller_sees_its_own_zone_first_in_every_cluster_of_the_service() -> None:
    mesh = build_ir(parse_mesh(MESH % DETECTION, "mesh.yaml"), secure=False)
    endpoints = endpoint_view(Translator(), mesh, caller())
    for name in ("outbound|9080||reviews", "outbound|9080|v1|reviews"):
        assert by_priority(assignment(endpoints, name)) == {0: "a", 1: "b"}
    elsewhere = endpoint_view(Translator(), mesh, caller(Locality("eu-west", "b")))
    assert by_priority(assignment(elsewhere, "outbound|9080||reviews")) == {0: "b", 1: "a"}


def test_callers_without_a_locality_or_meshes_without_one_share_the_common_sets() -> None:
    translator = Translator()
    mesh = build_ir(parse_mesh(MESH % DETECTION, "mesh.yaml"), secure=False)
    shared = translator.translate(mesh, [])
    assert translator.view(shared, caller(None))[ENDPOINT] is shared.full.endpoints
    plain = build_ir(parse_mesh(MESH % "", "mesh.yaml"), secure=False)
    shared = translator.translate(plain, [])
    assert translator.view(shared, caller())[ENDPOINT] is shared.full.endpoints  # no failover
    zones = {
        e["locality"]["zone"]
        for e in assignment(shared.full.endpoints, "outbound|9080||reviews")["endpoints"]
    }
    assert zones == {"a", "b"}


def test_a_callers_locality_set_is_kept_while_nothing_it_is_made_of_changes() -> None:
    translator = Translator()
    mesh = build_ir(parse_mesh(MESH % DETECTION, "mesh.yaml"), secure=False)
    first = endpoint_view(translator, mesh, caller())
    again = endpoint_view(translator, mesh, caller())
    assert again is first
    member = proxies.Instance("reviews", "10.0.0.9", 15006, (("version", "v1"),), HOME)
    joined = translator.view(translator.translate(mesh, [member]), caller())[ENDPOINT]
    found = assignment(joined, "outbound|9080|v1|reviews")["endpoints"][0]
    assert found["loadBalancingWeight"] == 2 and len(found["lbEndpoints"]) == 2


def test_distribute_turns_on_locality_weights_in_the_cluster() -> None:
    text = MESH % 'load_balancer: {locality: {distribute: [{from: "*", to: {eu-west: 100}}]}}'
    mesh = build_ir(parse_mesh(text, "mesh.yaml"), secure=False)
    translator = Translator()
    shared = translator.translate(mesh, [])
    clusters = translator.view(shared, caller())[CLUSTER]
    built = cluster.eds_cluster("x", mesh.services[0].policy)
    assert built.common_lb_config.HasField("locality_weighted_lb_config")
    assert "outbound|9080||reviews" in clusters
    weights = [
        e["loadBalancingWeight"]
        for e in assignment(endpoint_view(translator, mesh, caller()), "outbound|9080||reviews")[
            "endpoints"
        ]
    ]
    assert weights == [50, 50]


def problems(text: str) -> list[str]:
    with pytest.raises(MeshInvalid) as raised:
        parse_mesh(text, "mesh.yaml")
    return [problem.format() for problem in raised.value.problems]


def test_failover_without_outlier_detection_is_reported_where_it_is_written() -> None:
    text = MESH % "load_balancer: {locality: {failover: [{from: eu-west, to: us-east}]}}"
    assert problems(text) == [
        "mesh.yaml:7:32: services.reviews.load_balancer.locality.failover: locality failover "
        "needs 'outlier_detection' on the service: without it no member is ever found "
        "unhealthy, so traffic would never fail over"
    ]


def test_a_subsets_failover_counts_its_own_or_the_services_outlier_detection() -> None:
    failover = "load_balancer: {locality: {failover: [{from: eu-west, to: us-east}]}}"
    subset = f"subset_policies:\n      v1: {{{failover}, %s}}"
    assert problems(MESH % (subset % "connect_timeout: 1s")) == [
        "mesh.yaml:8:39: services.reviews.subset_policies.v1.load_balancer.locality.failover: "
        "locality failover needs 'outlier_detection' on the subset or its service: without it "
        "no member is ever found unhealthy, so traffic would never fail over"
    ]
    build_ir(parse_mesh(MESH % (subset % DETECTION), "mesh.yaml"), secure=False)
    build_ir(parse_mesh(MESH % f"{DETECTION}\n    {subset % 'connect_timeout: 1s'}", "m"))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("{failover: [{from: eu-west/a, to: us}]}", "failover is between regions"),
        ("{failover: [{from: eu, to: eu}]}", "must be different regions"),
        ('{distribute: [{from: "eu/*", to: {eu: 70}}]}', "add up to 70"),
        ('{distribute: [{from: "eu*", to: {eu: 100}}]}', "may only stand alone"),
        ("{failover: [{from: a, to: b}], distribute: [{from: a, to: {b: 100}}]}", "not both"),
    ],
)
def test_bad_locality_settings_are_reported(setting: str, message: str) -> None:
    text = MESH % f"{DETECTION}\n    load_balancer: {{locality: {setting}}}"
    found = problems(text)
    assert len(found) == 1 and message in found[0], found


def test_an_endpoint_locality_has_at_most_three_levels_and_no_wildcard() -> None:
    text = MESH.replace("eu-west/b", "eu/b/c/d") % ""
    assert "has 4 levels" in problems(text)[0]
    assert "no '*'" in problems(MESH.replace("eu-west/b", "eu/*") % "")[0]


def test_the_sidecars_locality_reaches_the_control_plane_through_the_bootstrap_node() -> None:
    ident = sidecar_identity(
        "reviews", None, (), "127.0.1.7", 9080, "127.0.0.1:18000", locality="eu-west/a/x"
    )
    built = node(ident)
    assert built["locality"] == {"region": "eu-west", "zone": "a", "sub_zone": "x"}
    proxy = proxy_from_node(json_format.ParseDict(built, base_pb2.Node()))
    assert proxy.locality == Locality("eu-west", "a", "x")
    assert proxy.instance is not None and proxy.instance.locality == proxy.locality
    with pytest.raises(BadSidecarOption, match="empty level"):
        sidecar_identity("r", None, (), "127.0.1.7", 9080, "127.0.0.1:18000", locality="eu//a")


def test_the_control_plane_refuses_a_node_locality_with_a_gap() -> None:
    bad = base_pb2.Node(id="r~127.0.1.7", cluster="r")
    bad.metadata.fields["ip"].string_value = "127.0.1.7"
    bad.locality.region, bad.locality.sub_zone = "eu-west", "x"
    with pytest.raises(BadNode, match="empty level"):
        proxy_from_node(bad)


def test_a_proxyless_clients_bootstrap_states_its_locality_too() -> None:
    ident = sidecar_identity(
        "client", None, (), "127.0.1.9", 8080, "127.0.0.1:18000", locality="us-east"
    )
    assert grpc_bootstrap(ident)["node"]["locality"] == {"region": "us-east"}


def test_up_gives_each_replica_of_a_run_entry_its_locality() -> None:
    text = (
        "mesh: m\nservices:\n  a:\n    port: 80\n    run:\n"
        "      - {command: app, replicas: 2, locality: eu-west/a}\n      - {command: app}\n"
    )
    ips = iter(["127.0.9.1", "127.0.9.2", "127.0.9.3"])
    replicas = plan_replicas(parse_mesh(text, "mesh.yaml"), lambda: next(ips))
    assert [r.locality for r in replicas] == ["eu-west/a", "eu-west/a", None]
