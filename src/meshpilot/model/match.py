"""Which requests a policy is about. Shared by the translator (Envoy RBAC and matchers) and the
mixer (which hooks to run), so both sides agree on every request."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache

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


def policy_matches(
    policy: ir.Policy, source: str | None, method: str, path: str, headers: Mapping[str, str]
) -> bool:
    target = policy.target
    return (
        (policy.sources is None or source in policy.sources)
        and (not target.methods or method in target.methods)
        and (not target.paths or any(_compiled(g).match(path) for g in target.paths))
        and all(value_matches(h, headers.get(h.name)) for h in target.headers)
    )
