"""One incremental (delta) ADS stream: subscriptions, per-resource versions, ACK/NACK
bookkeeping and what to push next, without I/O.

A response carries only the resources whose version differs from what the proxy has, and the
names of those it has that are gone. As on a state-of-the-world stream, a type has at most one
response in flight (what changes meanwhile goes in the next), make-before-break is `gating`'s,
and the proxy's whole accepted set is kept, so gating and status work the same way.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence

from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.translator.envoy.wire import string_field
from meshpilot.translator.resources import Resource, ResourceSet, delta_entry, version_of
from meshpilot.xds.cache import Watch
from meshpilot.xds.delta.state import DeltaTypeState
from meshpilot.xds.gating import with_resources_in_use
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.protocol import ProtocolStream, record_nack
from meshpilot.xds.snapshot import Snapshot
from meshpilot.xds.sotw.stream import StreamShared
from meshpilot.xds.types import BY_URL, CLUSTER, ENDPOINT

log = logging.getLogger(__name__)

WILDCARD = "*"
# A type with something to send: its URL and state, the set it should have, what to send
# (None: everything) and the names to remove.
_Candidate = tuple[str, DeltaTypeState, ResourceSet, Sequence[Resource] | None, list[str]]
_WILDCARD = frozenset([WILDCARD])
_nonces = itertools.count(1)


def new_delta_types(type_urls: Iterable[str]) -> dict[str, DeltaTypeState]:
    """The state of every type of a new stream, in push order."""
    return {type_url: DeltaTypeState() for type_url in type_urls}


def delta_response(
    resources: ResourceSet, updated: Sequence[Resource] | None, removed: Iterable[str], nonce: str
) -> bytes:
    """A serialized DeltaDiscoveryResponse carrying `updated` (None: every resource of
    `resources`, a first response) and the names `removed`."""
    if updated is None:
        entries: Iterable[bytes] = resources.delta_chunks()
    else:
        entries = (delta_entry(res) for res in updated)
    chunks = [string_field(1, resources.version), *entries]
    chunks += (string_field(4, resources.type_url), string_field(5, nonce))
    chunks += (string_field(6, name) for name in removed)
    return b"".join(chunks)


class DeltaStream(ProtocolStream[discovery_pb2.DeltaDiscoveryRequest]):
    def __init__(
        self,
        watch: Watch,
        types: dict[str, DeltaTypeState],
        metrics: XdsMetrics,
        shared: StreamShared,
    ) -> None:
        self.watch = watch
        self._types = types
        self.metrics = metrics
        self.shared = shared
        # What `wants_push` found, for the snapshot it looked at: `next_responses` uses it
        # unless a request or a new snapshot came in between (each look costs a diff per type).
        self._found: tuple[Snapshot | None, list[_Candidate]] | None = None

    @property
    def types(self) -> Mapping[str, DeltaTypeState]:
        return self._types

    def close(self) -> None:
        for state in self._types.values():
            self.shared.name_sets.release(state.names)

    def handle_request(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        """Record an ACK or a NACK, and the subscription changes the request carries."""
        self._found = None
        state = self._types.get(request.type_url)
        type_ = BY_URL.get(request.type_url)
        if state is None or type_ is None:
            log.warning("%s: ignoring unknown type %r", self.watch.proxy.node_id, request.type_url)
            return
        if request.response_nonce and request.response_nonce == state.nonce:
            if request.HasField("error_detail"):
                error = request.error_detail.message
                record_nack(state, request.type_url, error, self.watch.proxy.node_id, self.metrics)
            elif state.awaiting_reply:
                state.record_ack()
        again = state.subscribed
        if not again:
            self._first_request(state, request, wildcard=type_.wildcard)
        self._subscribe(state, request, again=again)

    @staticmethod
    def _first_request(
        state: DeltaTypeState, request: discovery_pb2.DeltaDiscoveryRequest, *, wildcard: bool
    ) -> None:
        """A first request subscribes; one naming nothing is a wildcard for CDS and LDS. The
        versions a reconnecting proxy says it has are what the first response is computed from."""
        state.subscribed = True
        state.wildcard = wildcard and not request.resource_names_subscribe
        if request.initial_resource_versions:
            state.initial = dict(request.initial_resource_versions)

    def _subscribe(
        self, state: DeltaTypeState, request: discovery_pb2.DeltaDiscoveryRequest, *, again: bool
    ) -> None:
        """Apply the request's subscription changes. A name subscribed to again on a stream
        (Envoy does, for the endpoints of a cluster it is replacing) is sent even if the proxy
        had it; on the first request, what the proxy has is in its initial versions."""
        subscribe = frozenset(request.resource_names_subscribe)
        unsubscribe = frozenset(request.resource_names_unsubscribe)
        if WILDCARD in subscribe:
            state.wildcard = True
        if WILDCARD in unsubscribe:
            state.wildcard = False
        subscribe, unsubscribe = subscribe - _WILDCARD, unsubscribe - _WILDCARD
        if subscribe or unsubscribe:
            state.names = self.shared.name_sets.changed(state.names, subscribe, unsubscribe)
            if again:
                state.resend |= subscribe

    def wants_push(self) -> bool:
        found = list(self._candidates())
        self._found = (self.watch.snapshot, found)
        return bool(found)

    def next_responses(self) -> list[bytes]:
        """The responses to send now, in push order; each type has at most one in flight."""
        found, self._found = self._found, None
        candidates: Iterable[_Candidate]
        if found is None or found[0] is not self.watch.snapshot or _has_clusters(found[1]):
            candidates = self._candidates()  # lazily: clusters sent make endpoints due again
        else:
            candidates = found[1]
        responses = []
        for type_url, state, desired, updated, removed in candidates:
            if BY_URL[type_url].gated and not self._dependencies_acked(desired):
                continue
            nonce = f"d{next(_nonces)}"
            responses.append(delta_response(desired, updated, removed, nonce))
            if type_url == CLUSTER:
                self._endpoints_again_for(updated, state.acked)
            state.record_sent(desired, nonce)
            self.metrics.pushed(type_url)
        return responses

    def _endpoints_again_for(
        self, clusters: Sequence[Resource] | None, had: ResourceSet | None
    ) -> None:
        """An updated cluster warms until it is sent its endpoints, changed or not (Envoy
        waits for them), so they go out again, right after it."""
        if had is not None and clusters is not None:
            self._types[ENDPOINT].resend.update(
                name for cluster in clusters if cluster.name in had for name in cluster.refs
            )

    def _dependencies_acked(self, desired: ResourceSet) -> bool:
        assert self.watch.snapshot is not None  # a candidate is taken from the snapshot
        return self.shared.gates.dependencies_acked(desired, self.watch.snapshot, self.types)

    def _candidates(self) -> Iterator[_Candidate]:
        """The types, in push order, with something to send: subscribed, nothing in flight,
        and a difference between what the proxy has and what it should have."""
        snapshot = self.watch.snapshot
        if snapshot is None:
            return
        for type_url, state in self._types.items():
            if not state.subscribed or state.awaiting_reply:
                continue
            desired = self._desired(type_url, snapshot)
            state.desired_version = desired.version
            if state.nacked_version == desired.version and not state.resend:
                continue  # rejected as it is: the next change is sent
            updated, removed = self._difference(state, desired)
            first = state.sent is None and state.initial is None
            if updated is None or updated or removed or first:
                if state.initial is None or time.monotonic() >= self.watch.hold_claims_until:
                    yield type_url, state, desired, updated, removed
            elif state.sent is None or state.sent.version != desired.version:
                state.sent = state.acked = desired  # it has exactly that: in sync, nothing sent
                state.initial = None

    def _difference(
        self, state: DeltaTypeState, desired: ResourceSet
    ) -> tuple[Sequence[Resource] | None, list[str]]:
        """(resources to send, None for all, names to remove) to take the proxy from what it
        has to `desired`. The first response of a subscription is sent even if empty (Envoy
        waits for it); a reconnecting proxy that has exactly `desired` is sent nothing, one that
        has something else keeps it while the others reconnect (SnapshotCache.hold_reconnects)."""
        if state.initial is not None:
            return _from_versions(state.initial, desired, state.resend)
        has = state.acked
        if has is None:
            return None, []
        updated = desired.changed_from(has)  # shared with other proxies: not to be changed
        again = [
            r
            for name in state.resend
            if (r := desired.resources.get(name)) is not None and r not in updated
        ]
        if again:
            updated = [*updated, *again]
        subscribed = state.subscription
        removed = [
            r.name
            for r in has.removed_from(desired)
            if subscribed is None or r.name in subscribed  # unsubscribed: the proxy dropped it
        ]
        return updated, removed

    def _desired(self, type_url: str, snapshot: Snapshot) -> ResourceSet:
        names = self._types[type_url].subscription
        wanted = with_resources_in_use(type_url, snapshot[type_url], self.types)
        return wanted if names is None else wanted.only(names)


def _has_clusters(candidates: list[_Candidate]) -> bool:
    return any(type_url == CLUSTER for type_url, *_ in candidates)


def _from_versions(
    versions: Mapping[str, str], desired: ResourceSet, resend: set[str]
) -> tuple[list[Resource], list[str]]:
    """The difference between the versions a reconnecting proxy has and `desired`."""
    resources = desired.resources
    updated = [
        r for name, r in resources.items() if versions.get(name) != version_of(r) or name in resend
    ]
    removed = [name for name in versions if name not in resources]
    return updated, removed
