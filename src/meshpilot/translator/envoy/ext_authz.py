"""The ext_authz filter for custom policies: it calls the mixer only for requests a custom policy
matches; every other request skips it (a matcher in front of the filter, no call at all)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

from envoy.config.core.v3 import base_pb2, config_source_pb2, extension_pb2, grpc_service_pb2
from envoy.extensions.common.matching.v3 import extension_matcher_pb2
from envoy.extensions.filters.common.matcher.action.v3 import skip_action_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.matching.common_inputs.ssl.v3 import ssl_inputs_pb2
from envoy.type.matcher.v3 import http_inputs_pb2
from google.protobuf.message import Message
from xds.core.v3 import extension_pb2 as xds_extension_pb2
from xds.type.matcher.v3 import matcher_pb2, regex_pb2, string_pb2

from meshpilot import identity
from meshpilot.identity.spiffe import SpiffeId
from meshpilot.model import ir, names
from meshpilot.model.match import ignoring_case, path_header_regex
from meshpilot.translator.envoy.common import duration, typed
from meshpilot.translator.envoy.filter_plugin import INBOUND, FilterContext, HttpFilter

EXT_AUTHZ = "envoy.filters.http.ext_authz"
Predicate: TypeAlias = matcher_pb2.Matcher.MatcherList.Predicate
_V3 = config_source_pb2.ApiVersion.Value("V3")
_ANYTHING = ".*"
_RE2 = regex_pb2.RegexMatcher.GoogleRE2()
_URI_SAN = ssl_inputs_pb2.UriSanInput()  # the URI SANs of the caller's certificate


def mixer_grpc_service(cluster: str, timeout_ms: int | None = None) -> grpc_service_pb2.GrpcService:
    service = grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=cluster)
    )
    if timeout_ms is not None:
        service.timeout.CopyFrom(duration(timeout_ms))
    return service


def ext_authz(mixer: ir.Mixer, cluster: str, destination: str) -> ext_authz_pb2.ExtAuthz:
    """Checks go to the mixer with the destination service named in the call's metadata."""
    grpc_service = mixer_grpc_service(cluster, mixer.timeout_ms)
    grpc_service.initial_metadata.append(
        base_pb2.HeaderValue(key=identity.DESTINATION_METADATA, value=destination)
    )
    return ext_authz_pb2.ExtAuthz(
        grpc_service=grpc_service, transport_api_version=_V3, failure_mode_allow=mixer.fail_open
    )


def _header(name: str, regex: str) -> Predicate:
    return _single(
        http_inputs_pb2.HttpRequestHeaderMatchInput(header_name=name), f"header {name}", regex
    )


def _single(data_input: Message, name: str, regex: str) -> Predicate:
    return Predicate(
        single_predicate=Predicate.SinglePredicate(
            input=xds_extension_pb2.TypedExtensionConfig(name=name, typed_config=typed(data_input)),
            value_match=string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(google_re2=_RE2, regex=regex)
            ),
        )
    )


def _combined(predicates: Sequence[Predicate], kind: str) -> Predicate | None:
    """All (kind "and") or any (kind "or") of the predicates; None for no predicate at all."""
    if len(predicates) <= 1:
        return predicates[0] if predicates else None
    combined = Predicate.PredicateList(predicate=predicates)
    return Predicate(and_matcher=combined) if kind == "and" else Predicate(or_matcher=combined)


def _exact_any(name: str, values: Sequence[str]) -> Predicate | None:
    return _combined([_header(name, _literal(v)) for v in values], "or")


def _literal(value: str) -> str:
    return re.escape(value)


def _value(rule: ir.ValueMatch) -> Predicate:
    regexes = {"exact": _literal(rule.value), "prefix": _literal(rule.value) + ".*"}
    if rule.kind == "absent":
        return Predicate(not_matcher=_header(rule.name, _ANYTHING))
    regex = regexes.get(rule.kind, rule.value if rule.kind == "regex" else _ANYTHING)
    return _header(rule.name, ignoring_case(regex) if rule.ignore_case else regex)


def _sources(sources: tuple[str, ...] | None, trust_domain: str | None) -> Predicate | None:
    """Callers whose mTLS certificate names one of the services; no one without identity."""
    if sources is None:
        return None
    if trust_domain is None:
        return Predicate(not_matcher=_header(":path", _ANYTHING))
    ids = [SpiffeId(trust_domain, source).uri for source in sources]
    return _combined([_single(_URI_SAN, "uri san", _literal(i)) for i in ids], "or")


def policy_predicate(policy: ir.Policy, trust_domain: str | None = None) -> Predicate | None:
    """What a custom policy matches, as a matcher predicate; None when it matches everything.
    Its `request_principals` and `claims` are left to the mixer (which hears the verified
    payload): the predicate lets through every request they might match."""
    target = policy.target
    parts = [
        _sources(policy.sources, trust_domain),
        _exact_any(":method", target.methods),
        _combined([_header(":path", path_header_regex(g)) for g in target.paths], "or"),
        *(_value(h) for h in target.headers),
    ]
    return _combined([p for p in parts if p is not None], "and")


def ext_authz_for(
    policies: Sequence[ir.Policy], authz: ext_authz_pb2.ExtAuthz, trust_domain: str | None = None
) -> Message:
    """The filter config: ext_authz itself when a policy matches every request, else wrapped so
    that requests no custom policy matches skip it."""
    predicates = [policy_predicate(p, trust_domain) for p in policies]
    if any(p is None for p in predicates):
        return authz
    matched = _combined([p for p in predicates if p is not None], "or")
    assert matched is not None
    skip = matcher_pb2.Matcher.OnMatch(
        action=xds_extension_pb2.TypedExtensionConfig(
            name="skip", typed_config=typed(skip_action_pb2.SkipFilter())
        )
    )
    unmatched = matcher_pb2.Matcher.MatcherList.FieldMatcher(
        predicate=Predicate(not_matcher=matched), on_match=skip
    )
    return extension_matcher_pb2.ExtensionWithMatcher(
        xds_matcher=matcher_pb2.Matcher(
            matcher_list=matcher_pb2.Matcher.MatcherList(matchers=[unmatched])
        ),
        extension_config=extension_pb2.TypedExtensionConfig(
            name=EXT_AUTHZ, typed_config=typed(authz)
        ),
    )


def _config(context: FilterContext) -> Message | None:
    """Custom policies call the mixer, when the mesh has one."""
    custom = context.of_action("custom")
    if not custom or context.mixer is None:
        return None
    check = ext_authz(context.mixer, names.MIXER_CLUSTER, context.proxy_service)
    if context.service is not None and context.service.jwt:
        check.metadata_context_namespaces.append(names.JWT_FILTER)  # claims for the hooks
    return ext_authz_for(custom, check, context.trust_domain)


def _clusters(context: FilterContext) -> Sequence[str]:
    calls = context.mixer is not None and bool(context.of_action("custom"))
    return [names.MIXER_CLUSTER] if calls else []


FILTER = HttpFilter(EXT_AUTHZ, INBOUND, _config, _clusters)
