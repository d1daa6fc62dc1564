"""The names delta streams subscribe to, one set object per distinct set, shared by streams.

Every sidecar of an unscoped mesh subscribes to the endpoints of every cluster and to every
route table: thousands of names. A set per stream costs hundreds of megabytes at a few thousand
proxies, and the subsets that proxies share (`ResourceSet.only`, kept per name set) would be
found by comparing sets name by name. A stream's set is the one object that every stream with
the same names holds, kept while one does.
"""

from __future__ import annotations

_CHANGES_KEPT = 64
_Change = tuple[int, frozenset[str], frozenset[str]]  # (id of the set, names added, removed)


class NameSets:
    """The distinct name sets of every delta stream of one server, with their users."""

    def __init__(self) -> None:
        self._sets: dict[frozenset[str], tuple[frozenset[str], int]] = {}
        # The last few changes made to a shared set (kept with it, so that its id stays its
        # own): every stream holding it makes the same one.
        self._changes: dict[_Change, tuple[frozenset[str], frozenset[str]]] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def changed(
        self, held: frozenset[str], subscribe: frozenset[str], unsubscribe: frozenset[str]
    ) -> frozenset[str]:
        """The shared set of `held` with `subscribe` added and `unsubscribe` removed, for a
        stream that held `held` until now: worked out once for every stream holding the same
        set (it costs a copy of thousands of names)."""
        key = (id(held), subscribe, unsubscribe)
        found = self._changes.get(key)
        if found is not None and found[0] is held:
            return self.replace(held, found[1])
        names = frozenset((held | subscribe) - unsubscribe)
        if len(self._changes) >= _CHANGES_KEPT:
            del self._changes[next(iter(self._changes))]
        self._changes[key] = (held, names)
        return self.replace(held, names)

    def replace(self, held: frozenset[str], names: frozenset[str]) -> frozenset[str]:
        """The shared object equal to `names`, for a stream that held `held` until now."""
        self.release(held)
        if not names:
            return frozenset()
        shared, users = self._sets.get(names, (names, 0))
        self._sets[shared] = (shared, users + 1)
        return shared

    def release(self, held: frozenset[str]) -> None:
        """A stream no longer holds `held` (it changed its names, or ended)."""
        if not held:
            return
        shared, users = self._sets[held]
        if users == 1:
            del self._sets[held]
        else:
            self._sets[held] = (shared, users - 1)
