"""One state-of-the-world ADS stream: ACK/NACK bookkeeping and what to push next, without I/O.

Each response carries a type's whole set; a type has at most one response in flight, and what
changed meanwhile is merged into the next. Make-before-break ordering is `gating`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping

from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.translator.resources import ResourceSet
from meshpilot.xds.cache import Watch
from meshpilot.xds.delta.subscriptions import NameSets
from meshpilot.xds.gating import Gates, with_resources_in_use
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.protocol import ProtocolStream, record_nack
from meshpilot.xds.snapshot import Snapshot
from meshpilot.xds.sotw.responses import Responses
from meshpilot.xds.sotw.state import SotwTypeState
from meshpilot.xds.sotw.subscriptions import Subscriptions
from meshpilot.xds.types import BY_URL

log = logging.getLogger(__name__)


def named(request: discovery_pb2.DiscoveryRequest) -> bool:
    """A request for a wildcard type (LDS, CDS) that names what it wants, as gRPC's xDS client
    does, is served just those; none, or `*`, is Envoy's subscription to all of them."""
    names = request.resource_names
    return bool(names) and "*" not in names


def new_types(type_urls: Iterable[str]) -> dict[str, SotwTypeState]:
    """The state of every type of a new stream, in push order."""
    return {type_url: SotwTypeState() for type_url in type_urls}


class StreamShared:
    """What every stream of one server shares: name sets (of either protocol), responses, and
    answers about sets."""

    def __init__(self) -> None:
        self.subscriptions = Subscriptions()
        self.name_sets = NameSets()
        self.responses = Responses()
        self.gates = Gates()


class SotwStream(ProtocolStream[discovery_pb2.DiscoveryRequest]):
    def __init__(
        self,
        watch: Watch,
        types: dict[str, SotwTypeState],
        metrics: XdsMetrics,
        shared: StreamShared,
    ) -> None:
        self.watch = watch
        self._types = types
        self.metrics = metrics
        self.shared = shared
        self._claimed: dict[str, str] = {}

    @property
    def types(self) -> Mapping[str, SotwTypeState]:
        return self._types

    def close(self) -> None:
        for state in self._types.values():
            self.shared.subscriptions.release(state)

    def handle_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        """Record an ACK, a NACK or a (re)subscription carried by one request."""
        state = self._types.get(request.type_url)
        type_ = BY_URL.get(request.type_url)
        if state is None or type_ is None:
            log.warning("%s: ignoring unknown type %r", self.watch.proxy.node_id, request.type_url)
            return
        by_name = not type_.wildcard or named(request)
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                return  # a reply to a response that has since been superseded
            if request.HasField("error_detail"):
                error = request.error_detail.message
                record_nack(state, request.type_url, error, self.watch.proxy.node_id, self.metrics)
            elif state.awaiting_reply:
                state.record_ack()
            elif by_name:
                # Nothing in flight, so not an ACK: Envoy asks again for resources it has, as it
                # does for the endpoints of a cluster being replaced (warming); answer it.
                state.resend = True
        elif request.version_info and state.sent is None:
            self._claimed[request.type_url] = request.version_info
        state.subscribed = True
        if by_name:
            self.shared.subscriptions.subscribe(state, request)
        else:
            self.shared.subscriptions.release(state)

    def wants_push(self) -> bool:
        return any(True for _ in self._candidates())

    def next_responses(self) -> list[bytes]:
        """The responses to send now, in push order; each type has at most one in flight."""
        responses = []
        for type_url, state, desired in self._candidates():
            if BY_URL[type_url].gated and self._gated and not self._dependencies_acked(desired):
                continue
            nonce, response = self.shared.responses.response(desired, state.nonce)
            state.record_sent(desired, nonce)
            responses.append(response)
            self.metrics.pushed(type_url)
        return responses

    @property
    def _gated(self) -> bool:
        """Make-before-break is the server's for a sidecar only: a proxyless gRPC client asks
        for clusters after it has the routes that name them, and uses new routes only once it
        has their clusters and endpoints."""
        return not self.watch.proxy.proxyless

    def _dependencies_acked(self, desired: ResourceSet) -> bool:
        assert self.watch.snapshot is not None  # a candidate is taken from the snapshot
        return self.shared.gates.dependencies_acked(desired, self.watch.snapshot, self.types)

    def _candidates(self) -> Iterator[tuple[str, SotwTypeState, ResourceSet]]:
        """The types, in push order, whose desired set is to be sent: subscribed, nothing in
        flight, and not what the proxy has (or asked again for)."""
        snapshot = self.watch.snapshot
        if snapshot is None:
            return
        for type_url, state in self._types.items():
            if not state.subscribed:
                continue
            desired = self._desired(type_url, snapshot)
            state.desired_version = desired.version
            if self._settled_by_claim(type_url, state, desired) or state.awaiting_reply:
                continue
            unchanged = state.sent is not None and state.sent.version == desired.version
            if unchanged and (not state.resend or state.nacked_version == desired.version):
                continue
            yield type_url, state, desired

    def _settled_by_claim(self, type_url: str, state: SotwTypeState, desired: ResourceSet) -> bool:
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

    def _desired(self, type_url: str, snapshot: Snapshot) -> ResourceSet:
        names = self._types[type_url].names
        wanted = with_resources_in_use(type_url, snapshot[type_url], self.types)
        return wanted if names is None else wanted.only(names)
