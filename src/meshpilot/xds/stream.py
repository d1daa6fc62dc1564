"""One state-of-the-world ADS stream: ACK/NACK bookkeeping and what to push next, without I/O.

Ordering is make-before-break: clusters, then endpoints, then listeners, then routes; listeners and
routes are held until every cluster they use has been ACKed together with its endpoints, and a
cluster that the proxy's current routes still use is kept until those routes are replaced.
"""

from __future__ import annotations

import itertools
import logging
import operator
import time
import weakref
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from typing import Any, TypeVar, cast

from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.translator.envoy.wire import string_field
from meshpilot.translator.resources import Resource, ResourceSet
from meshpilot.translator.translate import View
from meshpilot.xds.cache import Watch
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.subscriptions import Subscriptions
from meshpilot.xds.sync import TypeSync
from meshpilot.xds.types import BY_URL, CLUSTER, ENDPOINT, PUSH_ORDER, referrers, short_name

log = logging.getLogger(__name__)

_NOTHING_ACKED = ResourceSet(CLUSTER, ())  # what a proxy has of a type before its first ACK
_T = TypeVar("_T")


def discovery_response(resources: ResourceSet, nonce: str) -> bytes:
    """A serialized DiscoveryResponse: cached resource bytes plus this response's nonce."""
    return b"".join(
        (
            string_field(1, resources.version),
            *resources.chunks(),
            string_field(4, resources.type_url),
            string_field(5, nonce),
        )
    )


class Responses:
    """Builds responses; a set that many proxies receive gets one response, nonce included.

    A nonce only has to differ from the previous one on the same stream and type, so one
    response object (hundreds of kilobytes of endpoints or routes) can go to every proxy whose
    set it is. Nonces come from one counter, and a stream whose last response was the same
    object (a re-request) gets a new one.
    """

    def __init__(self) -> None:
        self._nonces = itertools.count(1)
        self._shared: weakref.WeakKeyDictionary[ResourceSet, tuple[str, bytes]] = (
            weakref.WeakKeyDictionary()
        )

    def response(self, resources: ResourceSet, previous_nonce: str) -> tuple[str, bytes]:
        """(nonce, response) for `resources`, never with `previous_nonce`."""
        shared = BY_URL[resources.type_url].shared
        if shared:
            found = self._shared.get(resources)
            if found is not None and found[0] != previous_nonce:
                return found
        nonce = f"n{next(self._nonces)}"
        built = (nonce, discovery_response(resources, nonce))
        if shared:
            self._shared[resources] = built
        return built


class _Memo:
    """Answers about shared sets, found again by the identity of the sets they are about.

    Keeps only weak references to them (an answer never keeps an old mesh alive) and forgets the
    oldest answer beyond `size`.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._answers: dict[tuple[int, ...], tuple[tuple[weakref.ref[Any], ...], Any]] = {}

    def get(self, about: tuple[object, ...], compute: Callable[[], _T]) -> _T:
        key = tuple(map(id, about))
        found = self._answers.get(key)
        if found is not None and all(map(operator.is_, (ref() for ref in found[0]), about)):
            return cast(_T, found[1])
        answer = compute()
        self._answers[key] = (tuple(map(weakref.ref, about)), answer)
        if len(self._answers) > self._size:
            del self._answers[next(iter(self._answers))]
        return answer


class StreamShared:
    """What every stream of one server shares: name sets, responses, and answers about sets."""

    def __init__(self) -> None:
        self.subscriptions = Subscriptions()
        self.responses = Responses()
        self.gates = _Memo()


class AdsStream:
    def __init__(self, watch: Watch, metrics: XdsMetrics, shared: StreamShared) -> None:
        self.watch = watch
        self.metrics = metrics
        self.shared = shared
        self.ended = False  # the proxy closed the stream, or it broke
        self._claimed: dict[str, str] = {}

    @property
    def sync(self) -> dict[str, TypeSync]:
        return self.watch.sync

    @property
    def in_flight(self) -> bool:
        """A response was sent that the proxy has not answered yet."""
        return any(state.awaiting_reply for state in self.sync.values())

    def close(self) -> None:
        """The stream ended: let go of what it shared with others."""
        for state in self.sync.values():
            self.shared.subscriptions.release(state)

    def handle_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        """Record an ACK, a NACK or a (re)subscription carried by one request."""
        state = self.sync.get(request.type_url)
        type_ = BY_URL.get(request.type_url)
        if state is None or type_ is None:
            log.warning("%s: ignoring unknown type %r", self.watch.proxy.node_id, request.type_url)
            return
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                return  # a reply to a response that has since been superseded
            if request.HasField("error_detail"):
                self._record_nack(request.type_url, state, request.error_detail.message)
            elif state.awaiting_reply:
                state.record_ack()
            elif not type_.wildcard:
                # Nothing in flight, so not an ACK: Envoy asks again for resources it has, as it
                # does for the endpoints of a cluster being replaced (warming); answer it.
                state.resend = True
        elif request.version_info and state.sent is None:
            self._claimed[request.type_url] = request.version_info
        state.subscribed = True
        if not type_.wildcard:
            self.shared.subscriptions.subscribe(state, request)

    def _record_nack(self, type_url: str, state: TypeSync, error: str) -> None:
        state.record_nack(error)
        self.metrics.nacked(type_url)
        log.warning(
            "NACK from %s for %s version %s: %s",
            self.watch.proxy.node_id,
            short_name(type_url),
            state.nacked_version,
            error,
        )

    def wants_push(self) -> bool:
        """Something may be pushed now (unless held back until its dependencies are ACKed)."""
        return any(True for _ in self._candidates())

    def next_responses(self) -> list[bytes]:
        """The responses to send now, in push order; each type has at most one in flight."""
        responses = []
        for type_url, state, desired in self._candidates():
            if BY_URL[type_url].gated and not self._dependencies_acked(desired):
                continue
            state.nonce, response = self.shared.responses.response(desired, state.nonce)
            state.sent = desired
            state.resend = False
            state.awaiting_reply = True
            responses.append(response)
            self.metrics.pushed(type_url)
        return responses

    def _candidates(self) -> Iterator[tuple[str, TypeSync, ResourceSet]]:
        """The types, in push order, whose desired set is to be sent: subscribed, nothing in
        flight, and not what the proxy has (or asked again for)."""
        view = self.watch.view
        if view is None:
            return
        for type_url in PUSH_ORDER:
            state = self.sync[type_url]
            if not state.subscribed:
                continue
            desired = self._desired(type_url, view)
            state.desired_version = desired.version
            if self._settled_by_claim(type_url, state, desired) or state.awaiting_reply:
                continue
            unchanged = state.sent is not None and state.sent.version == desired.version
            if unchanged and (not state.resend or state.nacked_version == desired.version):
                continue
            yield type_url, state, desired

    def _settled_by_claim(self, type_url: str, state: TypeSync, desired: ResourceSet) -> bool:
        """True when a reconnecting proxy's claimed version means nothing is to be sent now:
        it already has exactly `desired`, or it keeps its config while others reconnect."""
        claimed = self._claimed.get(type_url)
        if state.sent is not None or claimed is None:
            return False
        if claimed == desired.version:
            del self._claimed[type_url]
            state.sent = desired
            state.record_ack()
            return True
        if time.monotonic() < self.watch.hold_claims_until:
            return True
        del self._claimed[type_url]
        return False

    def _desired(self, type_url: str, view: View) -> ResourceSet:
        state = self.sync[type_url]
        wanted = self._with_resources_in_use(type_url, view[type_url])
        return wanted if state.names is None else wanted.only(state.names)

    def _with_resources_in_use(self, type_url: str, wanted: ResourceSet) -> ResourceSet:
        previous = self.sync[type_url].sent
        if previous is None or not BY_URL[type_url].kept_while_used:
            return wanted
        removed = previous.removed_from(wanted)
        if not removed:
            return wanted  # the usual case, found without looking at every resource
        referring = [
            sent.refs()
            for referrer in referrers(type_url)
            for sent in (self.sync[referrer].sent, self.sync[referrer].acked)
            if sent is not None
        ]
        kept = [res for res in removed if any(res.name in refs for refs in referring)]
        return ResourceSet.of(type_url, [*wanted.resources.values(), *kept]) if kept else wanted

    def _dependencies_acked(self, desired: ResourceSet) -> bool:
        """True when every cluster `desired` uses is ACKed, and so are that cluster's endpoints.

        A route table refers to thousands of clusters, and thousands of proxies check the same
        table against the same shared sets: the answer for the shared sets is kept, and only a
        proxy's own part (its app cluster) is looked at per proxy. (A proxy's listeners refer to
        a few clusters, and are its own: they are checked as they are.)
        """
        endpoints = _acked(self.sync[ENDPOINT])
        assert self.watch.view is not None
        known_base, known_own = self.watch.view[CLUSTER].split()
        acked = _acked(self.sync[CLUSTER])
        acked_base, acked_own = acked.split()
        if BY_URL[desired.type_url].shared:
            failing = self.shared.gates.get(
                (desired, known_base, acked_base, endpoints),
                lambda: _unready(desired.refs(), known_base, acked_base, endpoints),
            )
        else:
            failing = _unready(desired.refs(), known_base, acked_base, endpoints)
        if any(not _ready(acked_own.get(ref), endpoints) for ref in failing):
            return False
        refs = desired.refs()
        return all(_ready(acked.get(ref), endpoints) for ref in known_own.names if ref in refs)


def _acked(state: TypeSync) -> ResourceSet:
    return state.acked if state.acked is not None else _NOTHING_ACKED


def _unready(
    refs: AbstractSet[str], known: ResourceSet, acked: ResourceSet, endpoints: ResourceSet
) -> list[str]:
    """The references to known clusters that `acked` (with `endpoints`) does not satisfy."""
    return [ref for ref in refs if ref in known and not _ready(acked.get(ref), endpoints)]


def _ready(cluster: Resource | None, endpoints: ResourceSet) -> bool:
    """The cluster is ACKed, and so are the endpoints it uses."""
    return cluster is not None and all(eds in endpoints for eds in cluster.refs)
