"""The names delta streams subscribe to, one set object per distinct set, shared by streams.

Every sidecar of an unscoped mesh subscribes to the endpoints of every cluster and to every
route table: thousands of names. A set per stream costs hundreds of megabytes at a few thousand
proxies, and the subsets that proxies share (`ResourceSet.only`, kept per name set) would be
found by comparing sets name by name. A stream's set is the one object that every stream with
the same names holds, kept while one does.
"""

from __future__ import annotations


class NameSets:
    """The distinct name sets of every delta stream of one server, with their users."""

    def __init__(self) -> None:
        self._sets: dict[frozenset[str], tuple[frozenset[str], int]] = {}

    def __len__(self) -> int:
        return len(self._sets)

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
