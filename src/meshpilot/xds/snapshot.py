"""Consistency of a proxy's view: nothing may refer to a resource the view does not contain."""

from __future__ import annotations

from collections.abc import Mapping

from meshpilot.errors import InconsistentSnapshot
from meshpilot.translator.resources import CLUSTER, ENDPOINT, LISTENER, ROUTE, ResourceSet

# Which types a resource of each type may refer to.
REFERENCE_TYPES = {CLUSTER: (ENDPOINT,), LISTENER: (ROUTE, CLUSTER), ROUTE: (CLUSTER,)}


def check_consistent(view: Mapping[str, ResourceSet]) -> None:
    """Raise InconsistentSnapshot naming every dangling reference (as go-control-plane does)."""
    dangling = []
    for type_url, targets in REFERENCE_TYPES.items():
        known = {name for t in targets for name in view[t].resources}
        for res in view[type_url].resources.values():
            dangling += [f"{res.name} -> {ref}" for ref in res.refs if ref not in known]
    if dangling:
        raise InconsistentSnapshot("dangling references: " + ", ".join(sorted(dangling)))
