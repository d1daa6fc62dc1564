"""A proxy's snapshot: the resource sets of every type it should have, checked to be consistent.

Consistent (as go-control-plane's `Snapshot.Consistent`): no resource refers to one of another
type that the snapshot does not contain (every EDS name a cluster uses, every route table and
cluster a listener uses, and whatever a new type's `refers_to` row names). The cache checks each
new view on the serving path and never serves one that is not.

At scale the check must not cost a look at every resource per proxy: a view is sets shared by
many proxies plus a small part of the proxy's own (`ResourceSet.split`). The shared sets are
checked once per distinct combination (found again by identity), the own parts per proxy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from meshpilot.errors import InconsistentSnapshot
from meshpilot.translator.resources import ResourceSet
from meshpilot.xds.memo import Memo
from meshpilot.xds.types import TYPES, ResourceType

# Distinct combinations of shared sets after one change: a few per distinct `egress:` list.
_MEMO_SIZE = 4096


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
    """Checks views; one instance per cache, so answers about shared sets are reused."""

    def __init__(self) -> None:
        self._memo = Memo(_MEMO_SIZE)

    def snapshot(self, view: Mapping[str, ResourceSet]) -> Snapshot:
        """The view as a Snapshot; raises InconsistentSnapshot naming each dangling reference."""
        dangling = []
        for type_ in TYPES:
            missing = set(self._missing(view, type_))
            if missing:  # only when refused: look at the resources, to name the culprits
                resources = view[type_.url].resources.values()
                dangling += [f"{r.name} -> {ref}" for r in resources for ref in r.refs & missing]
        if dangling:
            raise InconsistentSnapshot("dangling references: " + ", ".join(sorted(dangling)))
        return Snapshot(view)

    def _missing(self, view: Mapping[str, ResourceSet], type_: ResourceType) -> list[str]:
        """The names resources of `type_` refer to that the view's `refers_to` sets lack."""
        if not type_.refers_to:
            return []
        targets = [view[t] for t in type_.refers_to]
        base, own = view[type_.url].split()
        if not (type_.shared or own.resources):
            return _absent(base.refs(), targets)  # all the proxy's own (its listeners): small
        target_bases = tuple(target.split()[0] for target in targets)
        suspects = self._memo.get((base, *target_bases), lambda: _absent(base.refs(), target_bases))
        # A name the shared sets lack may be in the proxy's own part of a target.
        return _absent([*suspects, *own.refs()], targets)


def _absent(refs: Iterable[str], targets: Sequence[ResourceSet]) -> list[str]:
    return [ref for ref in refs if not any(ref in target for target in targets)]


def check_consistent(view: Mapping[str, ResourceSet]) -> None:
    """Raise InconsistentSnapshot if `view` is not consistent (`render`, offline)."""
    Consistency().snapshot(view)
