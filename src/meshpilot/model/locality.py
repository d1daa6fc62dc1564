"""Localities (`region/zone/subzone`) and how a caller's locality orders a service's members:
Istio's locality load balancing, as plain values (the Envoy encoding is the translator's).

A caller with a locality sees the members grouped by locality. With failover (the default where
the cluster has outlier detection) groups get priorities by how close they are to the caller;
with `distribute` they get the weights of the first rule whose `from` matches the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

WILDCARD = "*"


@dataclass(frozen=True, order=True)
class Locality:
    """Where an instance runs; empty strings for the levels not given."""

    region: str
    zone: str = ""
    subzone: str = ""

    @classmethod
    def parse(cls, text: str) -> Locality:
        """`region`, `region/zone` or `region/zone/subzone` (checked by `locality_problem`)."""
        region, zone, subzone = (*text.split("/"), "", "")[:3]
        return cls(region, zone, subzone)

    def __str__(self) -> str:
        return "/".join((self.region, self.zone, self.subzone)).rstrip("/")


def locality_problem(text: str, *, wildcards: bool = False) -> str | None:
    """Why `text` is not a locality (or, with `wildcards`, a pattern of localities), or None."""
    levels = text.split("/")
    if len(levels) > 3:
        return f"'{text}' has {len(levels)} levels; a locality is region/zone/subzone at most"
    if any(not level for level in levels):
        return f"'{text}' has an empty level; write region, region/zone or region/zone/subzone"
    stars = [i for i, level in enumerate(levels) if WILDCARD in level]
    if stars and not wildcards:
        return f"'{text}': an instance's locality has no '*'"
    if stars and (stars != [len(levels) - 1] or levels[-1] != WILDCARD):
        return f"'{text}': '*' may only stand alone as the last level (e.g. 'eu-west/*')"
    return None


def matches(locality: Locality | None, pattern: str) -> bool:
    """Istio's rule matching: a level given as `*`, or not given, matches any value."""
    wanted = Locality.parse(pattern)
    found = locality or Locality("")
    pairs = zip(
        (wanted.region, wanted.zone, wanted.subzone),
        (found.region, found.zone, found.subzone),
        strict=True,
    )
    if locality is None and wanted.region != WILDCARD:
        return False
    return all(rule in ("", WILDCARD) or rule == value for rule, value in pairs)


@dataclass(frozen=True)
class Distribute:
    """Callers in `source` send each share of `to` (pattern, percent) to those localities."""

    source: str
    to: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class LocalityLb:
    """A cluster's locality settings. `failover`: (from region, to region) pairs that put a
    region next after the caller's own; `distribute` replaces failover when given."""

    enabled: bool = True
    failover: tuple[tuple[str, str], ...] = ()
    distribute: tuple[Distribute, ...] = ()


DEFAULT = LocalityLb()
_NOWHERE = Locality("")
Member = tuple[str, int]


@dataclass(frozen=True)
class Group:
    """Members of one locality as a caller sees them (Envoy's LocalityLbEndpoints)."""

    locality: Locality | None
    members: tuple[Member, ...]
    weight: int
    priority: int = 0


def groups(placed: Iterable[tuple[str, int, Locality | None]]) -> list[Group]:
    """Members by locality (those without one first), each weighted by its size, as a caller
    without a locality (or a cluster without locality settings) sees them."""
    by_locality: dict[Locality | None, set[Member]] = {}
    for address, port, locality in placed:
        by_locality.setdefault(locality, set()).add((address, port))
    ordered = sorted(
        by_locality.items(), key=lambda item: (item[0] is not None, item[0] or _NOWHERE)
    )
    return [Group(where, tuple(sorted(members)), len(members)) for where, members in ordered]


def for_caller(
    found: list[Group], caller: Locality, setting: LocalityLb, failover: bool
) -> list[Group]:
    """The groups as `caller` should see them: distributed by the first rule whose `from`
    matches it, else with failover priorities when `failover` (outlier detection) is on."""
    if not setting.enabled:
        return found
    rule = next((d for d in setting.distribute if matches(caller, d.source)), None)
    if rule is not None:
        return _distributed(found, rule)
    if failover and not setting.distribute:
        return _prioritized(found, caller, setting.failover)
    return found


def _distributed(found: list[Group], rule: Distribute) -> list[Group]:
    """Each share goes to the groups its pattern matches (and no earlier one did), split by
    their sizes and rounded up; groups no pattern matches get nothing (they are left out)."""
    weights: dict[int, int] = {}
    for pattern, percent in rule.to:
        chosen = [
            i for i, g in enumerate(found) if i not in weights and matches(g.locality, pattern)
        ]
        total = sum(found[i].weight for i in chosen)
        for i in chosen:
            weights[i] = -(-found[i].weight * percent // total)
    return [Group(g.locality, g.members, weights[i]) for i, g in enumerate(found) if weights.get(i)]


# Istio's failover levels: same subzone, same zone, same region, a failover region, the rest.
_OTHERS = 4


def _level(caller: Locality, where: Locality | None, failover: tuple[tuple[str, str], ...]) -> int:
    if where is None:
        return _OTHERS
    if where.region == caller.region:
        if where.zone != caller.zone:
            return 2
        return 0 if where.subzone == caller.subzone else 1
    if (caller.region, where.region) in failover:
        return 3
    return _OTHERS


def _prioritized(
    found: list[Group], caller: Locality, failover: tuple[tuple[str, str], ...]
) -> list[Group]:
    """Priorities by level, renumbered without gaps (Envoy wants 0..N), nearest first."""
    levels = [_level(caller, g.locality, failover) for g in found]
    rank = {level: i for i, level in enumerate(sorted(set(levels)))}
    ranked = [
        Group(g.locality, g.members, g.weight, rank[level])
        for g, level in zip(found, levels, strict=True)
    ]
    return sorted(ranked, key=lambda g: g.priority)
