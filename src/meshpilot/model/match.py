"""Which requests a policy is about. Shared by the translator (Envoy RBAC and matchers) and the
mixer (which hooks to run), so both sides agree on every request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from meshpilot.model import ir


def path_glob_regex(glob: str) -> str:
    """`/reviews/*` -> `^/reviews/.*$`: `*` is any characters, everything else is literal."""
    return "^" + ".*".join(re.escape(part) for part in glob.split("*")) + "$"


def path_header_regex(glob: str) -> str:
    """The same as `path_glob_regex` for the `:path` header, which may end in a query string."""
    return path_glob_regex(glob)[:-1] + r"(\?.*)?$"


def ignoring_case(regex: str) -> str:
    """The regex with its case-insensitive flag, in RE2 and Python alike (Envoy's `ignore_case`
    and `case_sensitive` do not apply to regexes)."""
    return f"(?i){regex}"


@cache
def _compiled(glob: str) -> re.Pattern[str]:
    return re.compile(path_glob_regex(glob))


def value_matches(rule: ir.ValueMatch, value: str | None) -> bool:
    if rule.kind == "absent":
        return value is None
    if value is None:
        return False
    if rule.kind == "present":
        return True
    if rule.kind == "regex":
        pattern = ignoring_case(rule.value) if rule.ignore_case else rule.value
        return re.fullmatch(pattern, value) is not None
    expected = rule.value
    if rule.ignore_case:  # as Envoy's StringMatcher: ASCII letters only
        value, expected = _ascii_lower(value), _ascii_lower(expected)
    return value.startswith(expected) if rule.kind == "prefix" else value == expected


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def principal_matches(wanted: ir.RequestPrincipal, claims: Mapping[str, Any]) -> bool:
    """As Envoy's RBAC: a verified token (it has `iss`) of the issuer and subject."""
    issuer = claims.get("iss")
    return (
        issuer is not None
        and wanted.issuer in (None, issuer)
        and wanted.subject in (None, claims.get("sub"))
    )


def claim_matches(rule: ir.ClaimMatch, claims: Mapping[str, Any]) -> bool:
    value = claims.get(rule.name)
    if isinstance(value, list):
        return any(v in rule.values for v in value)
    return value in rule.values


def token_matches(policy: ir.Policy, claims: Mapping[str, Any]) -> bool:
    """The policy's `request_principals` and `claims` against a verified payload ({}: none)."""
    principals = policy.principals
    return (principals is None or any(principal_matches(p, claims) for p in principals)) and all(
        claim_matches(c, claims) for c in policy.claims
    )


def policy_matches(
    policy: ir.Policy,
    source: str | None,
    method: str,
    path: str,
    headers: Mapping[str, str],
    claims: Mapping[str, Any] | None = None,
) -> bool:
    """`claims`: the verified token's payload (None: no verified token)."""
    target = policy.target
    return (
        (policy.sources is None or source in policy.sources)
        and token_matches(policy, claims or {})
        and (not target.methods or method in target.methods)
        and (not target.paths or any(_compiled(g).match(path) for g in target.paths))
        and all(value_matches(h, headers.get(h.name)) for h in target.headers)
    )
