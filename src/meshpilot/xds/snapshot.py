"""A proxy's snapshot: the resource sets of every type it should have, checked to be consistent.

Consistent (as go-control-plane's `Snapshot.Consistent`): no resource refers to one of another
type that the snapshot does not contain (every EDS name a cluster uses, every route table and
cluster a listener uses, and whatever a new type's `refers_to` row names). The cache checks each
new view on the serving path and never serves one that is not.

At scale the check must not cost a look at every resource per proxy: a view is sets shared by
many proxies plus a small part of the proxy's own (`ResourceSet.split`). The shared sets are
checked once per distinct combination in a change (found again by identity), the own parts
per proxy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from meshpilot.errors import InconsistentSnapshot
from meshpilot.translator.resources import Part, ResourceSet
from meshpilot.xds.types import TYPES, ResourceType


@dataclass(frozen=True, eq=False)
class Snapshot(Mapping[str, ResourceSet]):
    """What one proxy should have, per type URL; made only by `Consistency.snapshot`."""

    sets: Mapping[str, ResourceSet]

    def __getitem__(self, type_url: str) -> ResourceSet:
        return self.sets[type_url]

    def __iter__(self) -> Iterator[str]:
        return iter(self.sets)

    def __len__(self) -> int:
        return len(self.sets)

    def version(self, type_url: str) -> str:
        return self.sets[type_url].version


class Consistency:
    """Checks the views of one change: answers about its shared sets are kept while it lives
    (with the sets, so that their identities stay theirs), one instance per change."""

    def __init__(self) -> None:
        self._answers: dict[tuple[int, ...], tuple[object, frozenset[str]]] = {}

    def snapshot(
        self, view: Mapping[str, ResourceSet], checked: Snapshot | None = None
    ) -> Snapshot:
        """The view as a Snapshot; raises InconsistentSnapshot naming each dangling reference.
        A type whose set and target sets are those of `checked` (a snapshot made before, the
        same objects) is not checked again: when a proxy joins, others get new endpoints
        only."""
        split = {type_url: resources.split() for type_url, resources in view.items()}
        for type_ in TYPES:
            if not type_.refers_to or _unchanged(type_, view, checked):
                continue
            if self._missing(split, type_):
                raise InconsistentSnapshot("dangling references: " + ", ".join(_dangling(view)))
        return Snapshot(view)

    def _missing(self, split: Mapping[str, _Split], type_: ResourceType) -> frozenset[str]:
        """The names resources of `type_` refer to that the view's `refers_to` sets lack."""
        base, own = split[type_.url]
        targets = [split[t] for t in type_.refers_to]
        if not (type_.shared or own.resources):
            return _absent(base.refs(), targets)  # all the proxy's own (its listeners): small
        key = (id(base), *[id(target_base) for target_base, _ in targets])
        found = self._answers.get(key)
        if found is None:
            bases_only = [(target_base, _NO_PART) for target_base, _ in targets]
            found = self._answers[key] = ((base, targets), _absent(base.refs(), bases_only))
        suspects, own_refs = found[1], own.refs()
        if suspects or own_refs:
            # A name the shared sets lack may be in the proxy's own part of a target.
            return _absent(suspects.union(own_refs), targets)
        return suspects  # the usual case, at the cost of a lookup


_Split = tuple[ResourceSet, Part]  # a set as (shared with other proxies, the proxy's own)


def _unchanged(
    type_: ResourceType, view: Mapping[str, ResourceSet], checked: Snapshot | None
) -> bool:
    """`type_`'s set and the sets it refers to are the ones `checked` had."""
    if checked is None:
        return False
    urls = (type_.url, *type_.refers_to)
    return all(view[url] is checked.sets.get(url) for url in urls)


def _dangling(view: Mapping[str, ResourceSet]) -> list[str]:
    """Every dangling reference, as `resource -> name` (a look at every resource: only once a
    view is refused)."""
    return sorted(
        f"{res.name} -> {ref}"
        for type_ in TYPES
        for res in view[type_.url].resources.values()
        for ref in res.refs
        if not any(ref in view[target] for target in type_.refers_to)
    )


def _absent(refs: AbstractSet[str], targets: Iterable[_Split]) -> frozenset[str]:
    """The names of `refs` in none of `targets` (each split in its shared set and own part).
    Set differences in C, each iterating the (few) names left, never a target's thousands."""
    left = refs if isinstance(refs, frozenset) else frozenset(refs)
    for base, own in targets:
        left = left.difference(base.names)
        if left and own.resources:
            left = left.difference(own.names)
        if not left:
            break
    return left


_NO_PART = Part(())


def check_consistent(view: Mapping[str, ResourceSet]) -> None:
    """Raise InconsistentSnapshot if `view` is not consistent (`render`, offline)."""
    Consistency().snapshot(view)
