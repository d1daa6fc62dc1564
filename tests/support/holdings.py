"""What a simulated delta sidecar holds of one type: resource name -> version.

A delta sidecar applies each response to what it has (updated resources replace theirs by
name, removed ones go). Thousands of sidecars in a process hold the same thousands of
resources, so most of what one holds is a `Versions` mapping shared with every sidecar that
holds the same: applying a shared run of resources to one is memoized (`Transitions`), and
results with the same content are one object. Only the few resources a sidecar was sent on its
own (its app's cluster, its inbound listener) are kept per sidecar (`Holding.own`).

meshpilot's version of a set of resources is the sum of their content hashes (mod 2**64) and a
delta resource's version is its hash in hex, so a holding knows the version of what it holds:
the version the control plane says the proxy should have once a response is applied.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import Protocol

_MODULUS = 1 << 64


class Run(Protocol):
    """Consecutive resources of a response, as the decoder remembers them."""

    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def versions(self) -> tuple[str, ...]: ...

    @property
    def name_set(self) -> frozenset[str]: ...


class Versions:
    """Resource name -> version; never changed once made, so it can be shared."""

    __slots__ = ("__weakref__", "_names", "checksum", "map")

    def __init__(self, versions: dict[str, str], checksum: int) -> None:
        self.map = versions
        self.checksum = checksum
        self._names: frozenset[str] | None = None

    @property
    def names(self) -> frozenset[str]:
        """One frozenset per mapping: caches keyed by it hash it once."""
        if self._names is None:
            self._names = frozenset(self.map)
        return self._names


EMPTY = Versions({}, 0)


def _sum(versions: Mapping[str, str], names: tuple[str, ...]) -> int:
    return sum(int(versions[n], 16) for n in names if n in versions)


class Transitions:
    """`apply` memoized: the sidecars that held the same and were sent the same run of
    resources share the result, and results with the same content (checksum) are one object."""

    def __init__(self, size: int = 64) -> None:
        self._done: dict[tuple[int, int, tuple[str, ...]], tuple[Versions, object, Versions]] = {}
        self._size = size
        self._by_checksum: weakref.WeakValueDictionary[int, Versions] = (
            weakref.WeakValueDictionary()
        )

    def apply(self, held: Versions, run: Run | None, removed: tuple[str, ...]) -> Versions:
        key = (id(held), id(run), removed)
        found = self._done.pop(key, None)
        if found is None or found[0] is not held or found[1] is not run:
            found = (held, run, self._applied(held, run, removed))
            if len(self._done) >= self._size:
                del self._done[next(iter(self._done))]
        self._done[key] = found  # most recently used last
        return found[2]

    def _applied(self, held: Versions, run: Run | None, removed: tuple[str, ...]) -> Versions:
        names, versions = (run.names, run.versions) if run is not None else ((), ())
        checksum = held.checksum - _sum(held.map, names) - _sum(held.map, removed)
        checksum = (checksum + sum(int(v, 16) for v in versions)) % _MODULUS
        same = self._by_checksum.get(checksum)
        if same is not None:
            return same
        updated = dict(held.map)
        updated.update(zip(names, versions, strict=True))
        for name in removed:
            updated.pop(name, None)
        result = self._by_checksum[checksum] = Versions(updated, checksum)
        return result


class Holding(AbstractSet[str]):
    """One type's resources on one sidecar: a shared `Versions` and its own few resources."""

    __slots__ = ("own", "shared")

    def __init__(self) -> None:
        self.shared = EMPTY
        self.own: dict[str, str] = {}

    def apply(
        self,
        transitions: Transitions,
        run: Run | None,
        more: tuple[tuple[str, str], ...] = (),
        removed: tuple[str, ...] = (),
    ) -> None:
        """Updated resources (a shared `run`, then `more` read for this sidecar alone) replace
        theirs by name; `removed` names go."""
        if run is not None or removed:
            self.shared = transitions.apply(self.shared, run, removed)
            replaced = run.name_set if run is not None else frozenset()
            for name in [n for n in self.own if n in replaced or n in removed]:
                del self.own[name]
        self.own.update(more)

    @property
    def version(self) -> str:
        total = self.shared.checksum
        for name, version in self.own.items():
            total += int(version, 16) - int(self.shared.map.get(name, "0"), 16)
        return f"{total % _MODULUS:016x}"

    def items(self) -> Iterator[tuple[str, str]]:
        yield from self.own.items()
        yield from ((n, v) for n, v in self.shared.map.items() if n not in self.own)

    def __contains__(self, name: object) -> bool:
        return name in self.own or name in self.shared.map

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self.items())

    def __len__(self) -> int:
        return len(self.shared.map) + sum(1 for n in self.own if n not in self.shared.map)
