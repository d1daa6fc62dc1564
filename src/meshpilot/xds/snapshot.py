"""Consistency of a proxy's view: nothing may refer to a resource the view does not contain."""

from __future__ import annotations

from collections.abc import Mapping

from meshpilot.errors import InconsistentSnapshot
from meshpilot.translator.resources import ResourceSet
from meshpilot.xds.types import TYPES


def check_consistent(view: Mapping[str, ResourceSet]) -> None:
    """Raise InconsistentSnapshot naming every dangling reference (as go-control-plane does)."""
    dangling = []
    for type_ in TYPES:
        known = {name for t in type_.refers_to for name in view[t].resources}
        for res in view[type_.url].resources.values():
            dangling += [f"{res.name} -> {ref}" for ref in res.refs if ref not in known]
    if dangling:
        raise InconsistentSnapshot("dangling references: " + ", ".join(sorted(dangling)))
