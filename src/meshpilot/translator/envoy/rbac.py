"""Envoy RBAC filters for static policies, enforced at the destination's inbound listener.

`deny` policies go in a DENY filter, `allow` policies in an ALLOW filter (present only when the
service has allow policies: none means everyone is allowed), `audit` policies in shadow rules
that enforce nothing and record matches (stat `http.inbound.rbac.audit.shadow_allowed`, and the
policy name in the access log's `shadow_effective_policy_id`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from meshpilot.identity.spiffe import SpiffeId
from meshpilot.model import ir, names
from meshpilot.model.match import path_glob_regex
from meshpilot.translator.envoy.filter_plugin import INBOUND, FilterContext, HttpFilter
from meshpilot.translator.envoy.route import header_matcher

_ALLOW = rbac_pb2.RBAC.Action.Value("ALLOW")
_DENY = rbac_pb2.RBAC.Action.Value("DENY")


def principal(sources: tuple[str, ...] | None, trust_domain: str | None) -> rbac_pb2.Principal:
    """The callers: any (also unidentified ones), or the named source services by the SPIFFE ID
    in their mTLS certificate; without workload identity (None), no caller is a named one."""
    if sources is None:
        return rbac_pb2.Principal(any=True)
    if trust_domain is None:
        return rbac_pb2.Principal(not_id=rbac_pb2.Principal(any=True))
    ids = [
        rbac_pb2.Principal(
            authenticated=rbac_pb2.Principal.Authenticated(
                principal_name=string_pb2.StringMatcher(exact=SpiffeId(trust_domain, source).uri)
            )
        )
        for source in sources
    ]
    return _any_id(ids)


def _payload(claim: str, value: value_pb2.ValueMatcher) -> rbac_pb2.Principal:
    """A claim of the verified token's payload (jwt_authn's dynamic metadata)."""
    path = [metadata_pb2.MetadataMatcher.PathSegment(key=k) for k in (names.JWT_PAYLOAD, claim)]
    matcher = metadata_pb2.MetadataMatcher(filter=names.JWT_FILTER, path=path, value=value)
    return rbac_pb2.Principal(metadata=matcher)


def _exact(value: str) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=value))


def _all_ids(ids: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if not ids:
        return rbac_pb2.Principal(any=True)
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=ids))


def _any_id(ids: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return ids[0] if len(ids) == 1 else rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=ids))


def request_principal(wanted: ir.RequestPrincipal) -> rbac_pb2.Principal:
    """A verified token of the issuer and subject (a verified token always has an issuer)."""
    present = value_pb2.ValueMatcher(present_match=True)
    issuer = _payload("iss", present if wanted.issuer is None else _exact(wanted.issuer))
    subject = [] if wanted.subject is None else [_payload("sub", _exact(wanted.subject))]
    return _all_ids([issuer, *subject])


def claim(match: ir.ClaimMatch) -> rbac_pb2.Principal:
    """The claim is one of the values, or a list that holds one of them."""
    exact = [_exact(v) for v in match.values]
    one = (
        exact[0]
        if len(exact) == 1
        else value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=exact))
    )
    in_list = value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=one))
    return _payload(
        match.name,
        value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=[one, in_list])),
    )


def policy_principal(policy: ir.Policy, trust_domain: str | None) -> rbac_pb2.Principal:
    """Who a policy is about: its callers, the tokens' principals and claims, all together."""
    ids = [] if policy.sources is None else [principal(policy.sources, trust_domain)]
    if policy.principals is not None:
        ids.append(_any_id([request_principal(p) for p in policy.principals]))
    ids += [claim(c) for c in policy.claims]
    return _all_ids(ids)


def _any_of(rules: Sequence[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if len(rules) == 1:
        return rules[0]
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=rules))


def _path_rule(glob: str) -> rbac_pb2.Permission:
    regex = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=path_glob_regex(glob)))
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=regex))


def permission(target: ir.PolicyTarget) -> rbac_pb2.Permission:
    """The requests: any of the methods, any of the paths (query ignored), all the headers."""
    rules = []
    if target.methods:
        methods = [ir.ValueMatch(":method", "exact", m) for m in target.methods]
        rules.append(_any_of([rbac_pb2.Permission(header=header_matcher(m)) for m in methods]))
    if target.paths:
        rules.append(_any_of([_path_rule(glob) for glob in target.paths]))
    rules += [rbac_pb2.Permission(header=header_matcher(h)) for h in target.headers]
    if not rules:
        return rbac_pb2.Permission(any=True)
    if len(rules) == 1:
        return rules[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=rules))


def rbac_policies(
    policies: Sequence[ir.Policy], trust_domain: str | None
) -> dict[str, rbac_pb2.Policy]:
    return {
        p.name: rbac_pb2.Policy(
            permissions=[permission(p.target)], principals=[policy_principal(p, trust_domain)]
        )
        for p in policies
    }


def enforcing_rbac(
    action: str, policies: Sequence[ir.Policy], trust_domain: str | None = None
) -> rbac_filter_pb2.RBAC:
    """An RBAC filter that denies (action "deny") or only allows (action "allow") what matches."""
    rules = rbac_pb2.RBAC(
        action=_DENY if action == "deny" else _ALLOW,
        policies=rbac_policies(policies, trust_domain),
    )
    return rbac_filter_pb2.RBAC(rules=rules)


def audit_rbac(
    policies: Sequence[ir.Policy], trust_domain: str | None = None
) -> rbac_filter_pb2.RBAC:
    """Shadow rules only: every request passes; a match is counted and named in the access log."""
    shadow = rbac_pb2.RBAC(action=_ALLOW, policies=rbac_policies(policies, trust_domain))
    return rbac_filter_pb2.RBAC(shadow_rules=shadow, shadow_rules_stat_prefix=names.AUDIT_PREFIX)


def _audit(context: FilterContext) -> rbac_filter_pb2.RBAC | None:
    audit = context.of_action("audit")
    return audit_rbac(audit, context.trust_domain) if audit else None


def _enforcing(action: str) -> Callable[[FilterContext], rbac_filter_pb2.RBAC | None]:
    def config(context: FilterContext) -> rbac_filter_pb2.RBAC | None:
        chosen = context.of_action(action)
        return enforcing_rbac(action, chosen, context.trust_domain) if chosen else None

    return config


# Three filters: audits see every request, deny and allow run after custom policies' hooks.
AUDIT = HttpFilter("envoy.filters.http.rbac.audit", INBOUND, _audit)
DENY = HttpFilter("envoy.filters.http.rbac.deny", INBOUND, _enforcing("deny"))
ALLOW = HttpFilter("envoy.filters.http.rbac.allow", INBOUND, _enforcing("allow"))
