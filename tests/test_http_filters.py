"""HTTP filters as plug-ins: the order table decides which filters a chain has and where, each
plug-in gives its config for a sidecar, the clusters it calls and its per-route configs."""

from __future__ import annotations

import dataclasses

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import wrappers_pb2

from meshpilot import identity
from meshpilot.errors import InconsistentSnapshot
from meshpilot.model import ir, names, proxies
from meshpilot.translator.envoy import ext_authz, fault, http_filters, rbac
from meshpilot.translator.envoy.filter_plugin import INBOUND, FilterContext, HttpFilter
from meshpilot.translator.translate import Translator
from meshpilot.xds.snapshot import Consistency, check_consistent
from meshpilot.xds.types import LISTENER

MIXER = ir.Mixer("127.0.0.9:9901")
LIMIT = ir.RateLimit(requests=5, interval_ms=1000, burst=10)
PROXY = proxies.Proxy("web~127.0.1.2", "web", "127.0.1.2", 8080, ())
ADMIN = ir.PolicyTarget(paths=("/admin/*",))


def policy(name: str, action: ir.PolicyAction, target: ir.PolicyTarget = ADMIN) -> ir.Policy:
    hook = "/hooks.py:check" if action == "custom" else None
    return ir.Policy(name, "web", action, ("api",), target, hook)


EVERY_KIND = (
    policy("audit", "audit"),
    policy("custom", "custom"),
    policy("deny", "deny"),
    policy("allow", "allow"),
)


def manager(
    mesh: ir.MeshIR, listener: str = "inbound", proxy: proxies.Proxy = PROXY
) -> hcm.HttpConnectionManager:
    translator = Translator()
    view = translator.view(translator.translate(mesh, []), proxy)
    check_consistent(view)
    built = listener_pb2.Listener()
    entry = view[LISTENER].resources[listener].entry
    discovery_pb2.DiscoveryResponse.FromString(entry).resources[0].Unpack(built)
    found = hcm.HttpConnectionManager()
    built.filter_chains[0].filters[0].typed_config.Unpack(found)
    return found


def test_the_order_table_gives_each_chain_its_filters_router_last() -> None:
    assert http_filters.filter_names("inbound") == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.rbac.audit",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.rbac.deny",
        "envoy.filters.http.rbac.allow",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.router",
    ]
    assert http_filters.filter_names("outbound") == [
        "envoy.filters.http.cors",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]
    every = [f.name for f in http_filters.ORDER]
    assert len(every) == len(set(every))


def test_a_sidecar_with_every_policy_kind_and_a_limit_runs_them_in_the_contracts_order() -> None:
    shared = ir.RateLimit(20, 60_000, 20, scope="global")
    heavy = ir.Route("heavy", ir.RouteMatch(path="/heavy"), (), rate_limit=shared)
    tokens = (ir.JwtProvider("https://auth.example.com", "/jwks.json", '{"keys": []}'),)
    web = ir.Service("web", 9080, "grpc", routes=(heavy,), rate_limit=LIMIT, jwt=tokens)
    found = manager(ir.MeshIR("m", (web,), EVERY_KIND, MIXER))
    assert [f.name for f in found.http_filters] == http_filters.filter_names("inbound")
    configs = {f.name: f.typed_config for f in found.http_filters}

    audit, deny, allow = (rbac_filter_pb2.RBAC() for _ in range(3))
    configs["envoy.filters.http.rbac.audit"].Unpack(audit)
    configs["envoy.filters.http.rbac.deny"].Unpack(deny)
    configs["envoy.filters.http.rbac.allow"].Unpack(allow)
    assert list(audit.shadow_rules.policies) == ["audit"] and not audit.HasField("rules")
    assert (deny.rules.action, list(deny.rules.policies)) == (rbac_pb2.RBAC.DENY, ["deny"])
    assert (allow.rules.action, list(allow.rules.policies)) == (rbac_pb2.RBAC.ALLOW, ["allow"])

    wrapped = extension_matcher_pb2.ExtensionWithMatcher()
    configs["envoy.filters.http.ext_authz"].Unpack(wrapped)
    check = ext_authz_pb2.ExtAuthz()
    wrapped.extension_config.typed_config.Unpack(check)
    assert check.grpc_service.envoy_grpc.cluster_name == names.MIXER_CLUSTER
    assert [(m.key, m.value) for m in check.grpc_service.initial_metadata] == [
        (identity.DESTINATION_METADATA, "web")
    ]
    assert check.metadata_context_namespaces == [names.JWT_FILTER]  # hooks see the claims

    bucket = local_rate_limit_pb2.LocalRateLimit()
    configs["envoy.filters.http.local_ratelimit"].Unpack(bucket)
    assert bucket.token_bucket.max_tokens == 10 and bucket.rate_limited_as_resource_exhausted

    counted = rate_limit_pb2.RateLimit()
    configs["envoy.filters.http.ratelimit"].Unpack(counted)
    assert counted.rate_limit_service.grpc_service.envoy_grpc.cluster_name == names.MIXER_CLUSTER
    assert not counted.failure_mode_deny  # fail open, as Istio
    assert counted.rate_limited_as_resource_exhausted
    assert not counted.rate_limits  # the service has no global limit: only its route does


def test_filters_say_which_clusters_they_call() -> None:
    context = FilterContext("web", None, EVERY_KIND, MIXER)
    assert http_filters.http_filters("inbound", context)[1] == [names.MIXER_CLUSTER]
    without_mixer = FilterContext("web", None, EVERY_KIND, None)
    chosen, clusters = http_filters.http_filters("inbound", without_mixer)
    assert "envoy.filters.http.ext_authz" not in [f.name for f in chosen] and clusters == []


def test_a_custom_policy_for_every_request_calls_the_mixer_for_every_request() -> None:
    everything = ir.Policy("all", "web", "custom", None, ir.PolicyTarget(), "/h.py:f")
    config = ext_authz.ext_authz_for([everything], ext_authz.ext_authz(MIXER, "m", "web"))
    assert isinstance(config, ext_authz_pb2.ExtAuthz)
    assert rbac.permission(ir.PolicyTarget()) == rbac_pb2.Permission(any=True)


def test_a_custom_policys_header_rules_are_matcher_predicates() -> None:
    headers = (
        ir.ValueMatch("x-a", "exact", "a.b"),
        ir.ValueMatch("x-b", "prefix", "p"),
        ir.ValueMatch("x-c", "regex", "[0-9]+"),
        ir.ValueMatch("x-d", "present"),
        ir.ValueMatch("x-e", "absent"),
    )
    found = ext_authz.policy_predicate(
        ir.Policy("h", "web", "custom", None, ir.PolicyTarget(headers=headers), "/h.py:f")
    )
    assert found is not None
    rules = found.and_matcher.predicate
    single = [r.single_predicate for r in rules[:4]]
    assert [p.value_match.safe_regex.regex for p in single] == [r"a\.b", "p.*", "[0-9]+", ".*"]
    absent = rules[4].not_matcher.single_predicate
    assert absent.input.name == "header x-e" and absent.value_match.safe_regex.regex == ".*"


def test_every_outbound_chain_carries_an_idle_fault_filter_and_no_identity_header() -> None:
    """The caller is known by its certificate: no sidecar writes an identity header."""
    found = manager(ir.MeshIR("m", (ir.Service("web", 9080, "http"),)), "outbound")
    assert [f.name for f in found.http_filters] == http_filters.filter_names("outbound")
    idle = fault_pb2.HTTPFault()
    found.http_filters[1].typed_config.Unpack(idle)
    assert idle == fault_pb2.HTTPFault()
    assert identity.SOURCE_HEADER not in str(found)


def test_a_routes_fault_is_the_fault_filters_config_on_that_route() -> None:
    slow = ir.Route("slow", ir.RouteMatch(), (ir.Destination(None),), fault=ir.Fault(250, 10))
    plain = ir.Route("plain", ir.RouteMatch(path="/"), (ir.Destination(None),))
    web = ir.Service("web", 9080, "http", routes=(slow, plain))
    on_slow = http_filters.OUTBOUND_ROUTES(web, slow)
    assert list(on_slow) == ["envoy.filters.http.fault"] and not http_filters.OUTBOUND_ROUTES(
        web, plain
    )
    config = fault_pb2.HTTPFault()
    on_slow["envoy.filters.http.fault"].Unpack(config)
    assert config == fault.http_fault(ir.Fault(250, 10))
    assert config.delay.fixed_delay.ToMilliseconds() == 250
    assert config.delay.percentage.numerator == 100_000  # 10 % in millionths
    aborted = fault.http_fault(ir.Fault(abort_status=503, abort_percent=0.5))
    assert (aborted.abort.http_status, aborted.abort.percentage.numerator) == (503, 5_000)
    assert not aborted.HasField("delay")


def _buffer(context: FilterContext) -> buffer_pb2.Buffer | None:
    """A made-up plug-in: a buffer for services with routes, calling an `audit-sink` cluster."""
    service = context.service
    return (
        buffer_pb2.Buffer(max_request_bytes=wrappers_pb2.UInt32Value(value=1024))
        if (service is not None and service.routes)
        else None
    )


def _per_route_buffer(service: ir.Service, route: ir.Route) -> buffer_pb2.BufferPerRoute | None:
    return buffer_pb2.BufferPerRoute(disabled=True) if route.name == "upload" else None


BUFFER = HttpFilter("envoy.filters.http.buffer", INBOUND, _buffer, per_route=_per_route_buffer)
UPLOAD = ir.Route("upload", ir.RouteMatch(path_prefix="/up"), (ir.Destination(None),))
WEB = ir.Service("web", 9080, "http", routes=(UPLOAD,))


def _install(monkeypatch: pytest.MonkeyPatch, plugin: HttpFilter) -> None:
    """`plugin` as a row of the order table, just before the router."""
    order = list(http_filters.ORDER)
    order.insert(len(order) - 1, plugin)
    monkeypatch.setattr(http_filters, "ORDER", tuple(order))
    monkeypatch.setattr(http_filters, "INBOUND_ROUTES", http_filters.per_route("inbound"))


def test_a_new_filter_is_one_row_in_the_order_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing else names a filter: its row gives it its place and its per-route configs (the
    inbound route table keeps the routes it configures, before the catch-all)."""
    _install(monkeypatch, BUFFER)
    found = manager(ir.MeshIR("m", (WEB,)))
    assert [f.name for f in found.http_filters][-2:] == [BUFFER.name, "envoy.filters.http.router"]
    first, catch_all = found.route_config.virtual_hosts[0].routes
    assert first.name == names.route("web", "upload") and first.match.prefix == "/up"
    per_route = buffer_pb2.BufferPerRoute()
    first.typed_per_filter_config[BUFFER.name].Unpack(per_route)
    assert per_route.disabled
    assert catch_all.match.prefix == "/" and not catch_all.typed_per_filter_config


def test_a_filter_calling_a_cluster_the_proxy_lacks_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _install(monkeypatch, dataclasses.replace(BUFFER, clusters=lambda context: ["audit-sink"]))
    translator = Translator()
    view = translator.view(translator.translate(ir.MeshIR("m", (WEB,)), []), PROXY)
    with pytest.raises(InconsistentSnapshot, match="audit-sink"):
        Consistency().snapshot(view)
