"""Unit tests of translator pieces whose correctness is not visible in golden files alone."""

from __future__ import annotations

import pytest

from meshpilot.model import ir, proxies
from meshpilot.translator.envoy import cluster, route
from meshpilot.translator.resources import Part, ResourceSet, resource_from_bytes
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE


def test_eds_cluster_bytes_equal_serializing_the_cluster() -> None:
    for name in ["a", "outbound|9080|v1|reviews", "x" * 300]:
        expected = cluster.eds_cluster(name).SerializeToString(deterministic=True)
        assert cluster.eds_cluster_bytes(name) == expected


def test_a_set_version_depends_on_content_not_on_how_the_set_was_built() -> None:
    made = [resource_from_bytes(CLUSTER, name, name.encode()) for name in "abcd"]
    whole = ResourceSet.of(CLUSTER, made)
    grouped = ResourceSet(CLUSTER, [Part(made[:2]), Part(made[2:3])]).plus(Part(made[3:]))
    assert grouped.version == whole.version
    assert ResourceSet.of(CLUSTER, made[:3]).version != whole.version


def test_only_keeps_the_named_resources_and_returns_itself_when_all_are_named() -> None:
    made = [resource_from_bytes(ENDPOINT, name, name.encode()) for name in "abc"]
    full = ResourceSet.of(ENDPOINT, made)
    assert list(full.only(frozenset({"a", "c"})).resources) == ["a", "c"]
    assert full.only(frozenset("abcz")) is full


def test_assignment_bytes_equal_serializing_the_proto() -> None:
    from envoy.config.endpoint.v3 import endpoint_pb2

    from meshpilot.translator.envoy.endpoint import cluster_load_assignment_bytes

    members = [("127.0.1.2", 15006), ("10.0.0.1", 80), ("127.0.1.2", 15006), ("::1", 65535)]
    for chosen in ([], members[:1], members):
        expected = endpoint_pb2.ClusterLoadAssignment(cluster_name="outbound|80||a")
        if chosen:
            locality = expected.endpoints.add()
            locality.locality.SetInParent()
            locality.load_balancing_weight.value = 1  # without it gRPC drops the locality
            lb_endpoints = locality.lb_endpoints
            for address, port in sorted(set(chosen)):
                socket = lb_endpoints.add().endpoint.address.socket_address
                socket.address, socket.port_value = address, port
        assert cluster_load_assignment_bytes(
            "outbound|80||a", chosen
        ) == expected.SerializeToString(deterministic=True)


def test_removed_from_finds_what_a_new_set_lacks_through_its_changed_parts() -> None:
    a, b, c = (resource_from_bytes(CLUSTER, n, n.encode()) for n in "abc")
    kept, changed = Part([a]), Part([b, c])
    before = ResourceSet(CLUSTER, [kept, changed]).plus(Part([c]))
    after = ResourceSet(CLUSTER, [kept, Part([b])]).plus(Part([c]))
    assert before.removed_from(after) == []  # c moved into the proxy's own part: still there
    assert ResourceSet(CLUSTER, [kept, changed]).removed_from(ResourceSet(CLUSTER, [kept])) == [
        b,
        c,
    ]


def test_changed_from_finds_new_and_different_resources_once_for_every_proxy() -> None:
    a, b, c, b2 = (resource_from_bytes(CLUSTER, n[0], n.encode()) for n in ("a", "b", "c", "b2"))
    kept = Part([a])
    before = ResourceSet(CLUSTER, [kept, Part([b])])
    after = ResourceSet(CLUSTER, [kept, Part([b2, c])])
    assert after.changed_from(before) == [b2, c]  # b2 is b with other content
    assert after.changed_from(before) is after.changed_from(before)  # one answer, shared
    assert before.changed_from(before) == [] and after.changed_from(after) == []
    own, own2 = (resource_from_bytes(CLUSTER, "o", n.encode()) for n in ("o", "o2"))
    mine_before, mine_after = before.plus(Part([own])), after.plus(Part([own2]))
    assert mine_after.changed_from(mine_before) == [b2, c, own2]
    assert after.plus(Part([own])).changed_from(mine_before) == [b2, c]


def test_delta_streams_with_the_same_names_share_one_set() -> None:
    from meshpilot.xds.delta.subscriptions import NameSets

    sets = NameSets()
    first = sets.replace(frozenset(), frozenset({"a", "b"}))
    second = sets.replace(frozenset(), frozenset({"b", "a"}))
    assert second is first and len(sets) == 1
    third = sets.replace(first, frozenset({"a"}))  # the first stream drops b
    assert third == {"a"} and len(sets) == 2
    sets.release(second)
    sets.release(third)
    assert len(sets) == 0


def test_streams_making_the_same_change_to_a_shared_set_get_one_set() -> None:
    from meshpilot.xds.delta.subscriptions import NameSets

    sets = NameSets()
    a = sets.replace(frozenset(), frozenset({"x", "y"}))
    b = sets.replace(frozenset(), frozenset({"x", "y"}))
    more, fewer = frozenset({"z"}), frozenset({"x"})
    first = sets.changed(a, more, fewer)
    assert first == {"y", "z"} and sets.changed(b, more, fewer) is first
    assert len(sets) == 1  # both moved on: {x, y} is no longer held


def test_egress_scopes_a_proxys_view_to_the_services_it_calls() -> None:
    from meshpilot.translator.resources import decode
    from meshpilot.translator.translate import Translator

    services = (
        ir.Service("a", 80, "http", egress=("b",)),
        ir.Service("b", 80, "http"),
        ir.Service("c", 80, "http"),
    )
    translator = Translator()
    shared = translator.translate(ir.MeshIR("m", services), [])
    scoped = translator.view(shared, proxies.Proxy("a~1", "a", "10.0.0.1", 8080, ()))
    full = translator.view(shared, proxies.Proxy("c~1", "c", "10.0.0.2", 8080, ()))
    assert sorted(scoped[CLUSTER].resources) == ["inbound|8080||", "outbound|80||b"]
    assert list(scoped[ENDPOINT].resources) == ["outbound|80||b"]
    assert sorted(full[CLUSTER].resources) == [
        "inbound|8080||",
        "outbound|80||a",
        "outbound|80||b",
        "outbound|80||c",
    ]
    assert list(scoped[ROUTE].resources) == ["outbound|b"]
    table = decode(scoped[ROUTE].resources["outbound|b"])
    assert [v["name"] for v in table["virtualHosts"]] == ["b"]
    (scope,) = (decode(s) for s in scoped[SCOPED_ROUTE].resources.values())
    assert scope["key"]["fragments"] == [{"stringKey": "b"}]
    assert scope["routeConfigurationName"] == "outbound|b"
    assert list(full[ROUTE].resources) == ["outbound|a", "outbound|b", "outbound|c"]
    again = translator.view(shared, proxies.Proxy("a~2", "a", "10.0.0.3", 8080, ()))
    assert again[ROUTE] is scoped[ROUTE]  # one scoped set per egress list, shared by its proxies
    assert again[SCOPED_ROUTE] is scoped[SCOPED_ROUTE]


def test_only_keeps_the_parts_asked_for_whole_and_shared() -> None:
    a, b, c = (resource_from_bytes(ENDPOINT, n, n.encode()) for n in "abc")
    whole, split = Part([a]), Part([b, c])
    subset = ResourceSet(ENDPOINT, [whole, split]).only(frozenset({"a", "b"}))
    assert subset.parts[0] is whole and subset.parts[1].resources == (b,)
    assert ResourceSet(ENDPOINT, [whole, split]).only(frozenset("a")).parts == (whole,)


def _services(weight: int) -> tuple[ir.Service, ...]:
    """`a` calls only `b`; `c` calls everything; `c`'s route sends `weight` % to v1."""
    v1, v2 = ir.Subset("v1", (("version", "v1"),)), ir.Subset("v2", (("version", "v2"),))
    to = (ir.Destination("v1", weight), ir.Destination("v2", 100 - weight))
    return (
        ir.Service("a", 80, "http", egress=("b",)),
        ir.Service("b", 80, "http"),
        ir.Service("c", 80, "http", (v1, v2), routes=(ir.Route("r", ir.RouteMatch(), to),)),
    )


def test_an_edit_changes_only_the_views_that_depend_on_it() -> None:
    from meshpilot.translator.translate import Translator

    translator = Translator()
    caller_of_b = proxies.Proxy("a~1", "a", "10.0.0.1", 8080, ())
    caller_of_all = proxies.Proxy("c~1", "c", "10.0.0.2", 8080, ())
    before = translator.translate(ir.MeshIR("m", _services(90)), [])
    scoped, full = (translator.view(before, p) for p in (caller_of_b, caller_of_all))
    after = translator.translate(ir.MeshIR("m", _services(50)), [])
    assert translator.view(after, caller_of_b) is scoped  # its proxies are not even woken
    changed = translator.view(after, caller_of_all)
    assert changed[ROUTE].version != full[ROUTE].version
    assert changed[ENDPOINT].version == full[ENDPOINT].version  # nothing to push


def test_a_proxy_joining_changes_only_the_endpoints() -> None:
    from meshpilot.translator.translate import Translator

    translator = Translator()
    services = ir.MeshIR("m", _services(90))
    before = translator.translate(services, [])
    member = proxies.Instance("c", "10.0.0.9", proxies.INBOUND_PORT, (("version", "v1"),))
    after = translator.translate(services, [member])
    assert after.full.clusters is before.full.clusters and after.full.routes is before.full.routes
    assert after.full.endpoints.version != before.full.endpoints.version
    kept = {id(part) for part in before.full.endpoints.parts}
    rebuilt = [r.name for p in after.full.endpoints.parts if id(p) not in kept for r in p.resources]
    assert rebuilt and all(name.endswith("|c") for name in rebuilt)  # only c's endpoints
    assert translator.translate(services, [member]).full is after.full


def test_a_set_plus_a_proxys_part_reads_as_one_set() -> None:
    a, b, own = (resource_from_bytes(CLUSTER, n, n.encode(), refs=(n.upper(),)) for n in "abo")
    shared = ResourceSet(CLUSTER, [Part([a, b])])
    mine = shared.plus(Part([own]))
    whole = ResourceSet.of(CLUSTER, [a, b, own])
    assert mine.parts == (*shared.parts, mine.split()[1])
    assert mine.entries == shared.entries + own.entry and mine.version == whole.version
    assert sorted(mine.names) == ["a", "b", "o"] and len(mine.names) == len(mine) == 3
    assert sorted(mine.refs()) == ["A", "B", "O"] and "O" in mine.refs()
    assert mine.get("o") is own and mine.get("a") is a and mine.get("z") is None
    # Against a set without a part of its own: every resource the other lacks.
    assert mine.removed_from(ResourceSet.of(CLUSTER, [b])) == [a, own]


def test_routes_carry_only_what_filters_configure_on_them() -> None:
    """Without per-route configs (the builder's default) a route has none."""
    r = ir.Route("r", ir.RouteMatch(), (ir.Destination(None),), fault=ir.Fault(abort_status=503))
    service = ir.Service("a", 80, "http", routes=(r,))
    built = route.virtual_host(service, lambda subset: "outbound|80||a")
    assert built.domains == ["a", "a:80"]
    assert not built.routes[0].typed_per_filter_config
    assert not built.routes[0].route.HasField("auto_host_rewrite")


def test_an_absent_query_parameter_cannot_be_matched() -> None:
    with pytest.raises(ValueError, match="absent query parameter"):
        route.query_matcher(ir.ValueMatch("debug", "absent"))
    assert route.query_matcher(ir.ValueMatch("debug", "present")).present_match


def test_the_mixer_cluster_is_built_once_per_address() -> None:
    from meshpilot.translator.resources import decode
    from meshpilot.translator.translate import Translator

    services = _services(90)
    translator = Translator()
    first = translator.translate(ir.MeshIR("m", services, mixer=ir.Mixer("127.0.0.9:9901")), [])
    again = translator.translate(ir.MeshIR("m", services, mixer=ir.Mixer("127.0.0.9:9901")), [])
    assert again.shared_clusters[0] is first.shared_clusters[0]
    assert again.full.clusters is first.full.clusters
    moved = translator.translate(ir.MeshIR("m", services, mixer=ir.Mixer("mixer:9901")), [])
    (mixer,) = moved.shared_clusters[0].resources
    assert decode(mixer)["type"] == "STRICT_DNS"
    assert moved.full.clusters.version != first.full.clusters.version


def test_the_collector_cluster_follows_the_mesh_and_every_sidecar_refers_to_it() -> None:
    from meshpilot.translator.resources import decode
    from meshpilot.translator.translate import Translator

    def mesh(collector: str | None) -> ir.MeshIR:
        return ir.MeshIR(
            "m",
            _services(90),
            telemetry=ir.Telemetry(
                sampling=5, collector=ir.Collector(collector) if collector else None
            ),
        )

    translator = Translator()
    first = translator.translate(mesh("[::1]:9411"), [])
    (collector,) = first.shared_clusters[0].resources
    address = decode(collector)["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]
    assert address["address"]["socketAddress"] == {"address": "::1", "portValue": 9411}
    assert translator.translate(mesh("[::1]:9411"), []).full.clusters is first.full.clusters
    view = translator.view(first, proxies.Proxy("a~1", "a", "10.0.0.1", 8080, ()))
    assert "zipkin" in view[CLUSTER].resources  # a scoped (`egress:`) view has it too
    for name in ("inbound", "outbound"):
        listener = view[LISTENER].get(name)
        assert listener is not None and "zipkin" in listener.refs
    off = translator.translate(mesh(None), [])
    assert off.shared_clusters == ()
    plain = translator.view(off, proxies.Proxy("a~1", "a", "10.0.0.1", 8080, ()))
    inbound = plain[LISTENER].get("inbound")
    assert inbound is not None
    manager = decode(inbound)["filterChains"][0]["filters"][0]["typedConfig"]
    assert manager["tracing"] == {
        "randomSampling": {"value": 5.0},
        "spawnUpstreamSpan": False,
        "operation": "%REQ(:AUTHORITY)%",
    }
