"""One state-of-the-world ADS stream: ACK/NACK bookkeeping and what to push next, without I/O.

Ordering is make-before-break: clusters, then endpoints, then listeners, then routes; listeners and
routes are held until every cluster they use has been ACKed together with its endpoints, and a
cluster that the proxy's current routes still use is kept until those routes are replaced.
"""

from __future__ import annotations

import itertools
import logging
import time

from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.translator.envoy.wire import string_field
from meshpilot.translator.resources import (
    CLUSTER,
    ENDPOINT,
    LISTENER,
    PUSH_ORDER,
    ROUTE,
    SHORT_NAMES,
    ResourceSet,
)
from meshpilot.xds.cache import Watch
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.sync import TypeSync

log = logging.getLogger(__name__)

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
# A resource is still in use while a resource of these types, sent or ACKed, refers to it.
REFERRERS = {CLUSTER: (LISTENER, ROUTE), ENDPOINT: (CLUSTER,)}
# Types that must only be pushed once everything they refer to is ACKed.
GATED_TYPES = frozenset({LISTENER, ROUTE})


def discovery_response(resources: ResourceSet, nonce: str) -> bytes:
    """A serialized DiscoveryResponse: cached resource bytes plus this response's nonce."""
    return b"".join(
        (
            string_field(1, resources.version),
            resources.entries,
            string_field(4, resources.type_url),
            string_field(5, nonce),
        )
    )


class AdsStream:
    def __init__(self, watch: Watch, metrics: XdsMetrics) -> None:
        self.watch = watch
        self.metrics = metrics
        self._nonces = itertools.count(1)
        self._claimed: dict[str, str] = {}

    @property
    def sync(self) -> dict[str, TypeSync]:
        return self.watch.sync

    def handle_request(self, request: discovery_pb2.DiscoveryRequest) -> None:
        """Record an ACK, a NACK or a (re)subscription carried by one request."""
        state = self.sync.get(request.type_url)
        if state is None:
            log.warning("%s: ignoring unknown type %r", self.watch.proxy.node_id, request.type_url)
            return
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                return  # a reply to a response that has since been superseded
            if request.HasField("error_detail"):
                self._record_nack(request.type_url, state, request.error_detail.message)
            elif state.awaiting_reply:
                state.record_ack()
            elif request.type_url not in WILDCARD_TYPES:
                # Nothing in flight, so not an ACK: Envoy asks again for resources it has, as it
                # does for the endpoints of a cluster being replaced (warming); answer it.
                state.resend = True
        elif request.version_info and state.sent is None:
            self._claimed[request.type_url] = request.version_info
        state.subscribed = True
        if request.type_url not in WILDCARD_TYPES:
            state.names = frozenset(request.resource_names)

    def _record_nack(self, type_url: str, state: TypeSync, error: str) -> None:
        state.record_nack(error)
        self.metrics.nacked(type_url)
        log.warning(
            "NACK from %s for %s version %s: %s",
            self.watch.proxy.node_id,
            SHORT_NAMES[type_url],
            state.nacked_version,
            error,
        )

    def next_responses(self) -> list[bytes]:
        """The responses to send now, in push order; each type has at most one in flight."""
        if self.watch.view is None:
            return []
        responses = []
        for type_url in PUSH_ORDER:
            state = self.sync[type_url]
            if not state.subscribed:
                continue
            desired = self._desired(type_url)
            state.desired_version = desired.version
            if self._settled_by_claim(type_url, state, desired):
                continue
            if state.awaiting_reply:
                continue
            unchanged = state.sent is not None and state.sent.version == desired.version
            if unchanged and (not state.resend or state.nacked_version == desired.version):
                continue
            if type_url in GATED_TYPES and not self._dependencies_acked(desired):
                continue
            state.sent = desired
            state.resend = False
            state.nonce = str(next(self._nonces))
            state.awaiting_reply = True
            responses.append(discovery_response(desired, state.nonce))
            self.metrics.pushed(type_url)
        return responses

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

    def _desired(self, type_url: str) -> ResourceSet:
        assert self.watch.view is not None
        state = self.sync[type_url]
        wanted = self._with_resources_in_use(type_url, self.watch.view[type_url])
        return wanted if state.names is None else wanted.only(state.names)

    def _with_resources_in_use(self, type_url: str, wanted: ResourceSet) -> ResourceSet:
        previous = self.sync[type_url].sent
        if previous is None or type_url not in REFERRERS:
            return wanted
        removed = previous.removed_from(wanted)
        if not removed:
            return wanted  # the usual case, found without looking at every resource
        in_use = set()
        for referrer in REFERRERS[type_url]:
            state = self.sync[referrer]
            for sent in (state.sent, state.acked):
                in_use |= sent.refs() if sent else set()
        kept = [res for res in removed if res.name in in_use]
        return ResourceSet.of(type_url, [*wanted.resources.values(), *kept]) if kept else wanted

    def _dependencies_acked(self, desired: ResourceSet) -> bool:
        """True when every cluster `desired` uses is ACKed, and so are that cluster's endpoints."""
        clusters = self.sync[CLUSTER].acked
        endpoints = self.sync[ENDPOINT].acked
        acked_clusters = clusters.resources if clusters else {}
        acked_endpoints = endpoints.resources if endpoints else {}
        assert self.watch.view is not None
        known_clusters = self.watch.view[CLUSTER].resources
        for ref in desired.refs():
            if ref not in known_clusters:
                continue
            cluster = acked_clusters.get(ref)
            if cluster is None or any(eds not in acked_endpoints for eds in cluster.refs):
                return False
        return True
