"""Make-before-break: what a proxy is sent never refers to something it has not accepted.

Listeners and routes are held until every cluster they use is ACKed together with its
endpoints, and a removed cluster (or endpoint assignment) that what the proxy has still uses is
kept until that is replaced. Written against `protocol.TypeState` (the whole sets sent and
ACKed), so a state-of-the-world stream and a delta stream are gated the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from meshpilot.translator.resources import Resource, ResourceSet
from meshpilot.xds.memo import Memo
from meshpilot.xds.protocol import TypeState
from meshpilot.xds.types import BY_URL, CLUSTER, ENDPOINT, referrers

_NOTHING_ACKED = ResourceSet(CLUSTER, ())  # what a proxy has of a type before its first ACK


class Gates:
    """The gating of every stream of one server, sharing answers about shared sets."""

    def __init__(self) -> None:
        self._memo = Memo()

    def dependencies_acked(
        self,
        desired: ResourceSet,
        snapshot: Mapping[str, ResourceSet],
        types: Mapping[str, TypeState],
    ) -> bool:
        """True when every cluster `desired` uses is ACKed, and so are that cluster's endpoints.

        A route table refers to thousands of clusters, and thousands of proxies check the same
        table against the same shared sets: the answer for the shared sets is kept, and only a
        proxy's own part (its app cluster) is looked at per proxy. (A proxy's listeners refer to
        a few clusters, and are its own: they are checked as they are.)
        """
        endpoints = _acked(types[ENDPOINT])
        known_base, known_own = snapshot[CLUSTER].split()
        acked = _acked(types[CLUSTER])
        acked_base, acked_own = acked.split()
        if BY_URL[desired.type_url].shared:
            failing = self._memo.get(
                (desired, known_base, acked_base, endpoints),
                lambda: _unready(desired.refs(), known_base, acked_base, endpoints),
            )
        else:
            failing = _unready(desired.refs(), known_base, acked_base, endpoints)
        if any(not _ready(acked_own.get(ref), endpoints) for ref in failing):
            return False
        refs = desired.refs()
        return all(_ready(acked.get(ref), endpoints) for ref in known_own.names if ref in refs)


def with_resources_in_use(
    type_url: str, wanted: ResourceSet, types: Mapping[str, TypeState]
) -> ResourceSet:
    """`wanted`, plus what the proxy was sent of `type_url` that it still uses (if that type is
    `kept_while_used`): what it was sent or ACKed of a referring type refers to it."""
    previous = types[type_url].sent
    if previous is None or not BY_URL[type_url].kept_while_used:
        return wanted
    removed = previous.removed_from(wanted)
    if not removed:
        return wanted  # the usual case, found without looking at every resource
    referring = [
        sent.refs()
        for referrer in referrers(type_url)
        for sent in (types[referrer].sent, types[referrer].acked)
        if sent is not None
    ]
    kept = [res for res in removed if any(res.name in refs for refs in referring)]
    return ResourceSet.of(type_url, [*wanted.resources.values(), *kept]) if kept else wanted


def _acked(state: TypeState) -> ResourceSet:
    return state.acked if state.acked is not None else _NOTHING_ACKED


def _unready(
    refs: AbstractSet[str], known: ResourceSet, acked: ResourceSet, endpoints: ResourceSet
) -> list[str]:
    """The references to known clusters that `acked` (with `endpoints`) does not satisfy."""
    return [ref for ref in refs if ref in known and not _ready(acked.get(ref), endpoints)]


def _ready(cluster: Resource | None, endpoints: ResourceSet) -> bool:
    """The cluster is ACKed, and so are the endpoints it uses."""
    return cluster is not None and all(eds in endpoints for eds in cluster.refs)
