"""What every xDS protocol variant keeps per stream and per type, behind one interface.

The server (push permits, wakeups), the cache (`all_synced`), make-before-break gating and the
admin API read a stream only through these classes, so a delta xDS stream can be served, gated
and reported exactly as a state-of-the-world one is (`sotw/` implements them; `delta/` would).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from enum import StrEnum
from typing import Generic, TypeVar

from meshpilot.translator.resources import ResourceSet
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.types import short_name

log = logging.getLogger(__name__)


class SyncStatus(StrEnum):
    SYNCED = "SYNCED"
    STALE = "STALE"
    NACKED = "NACKED"
    NOT_SENT = "NOT_SENT"


class TypeState(ABC):
    """One resource type on one stream: subscription, what was sent and ACKed, the last NACK.

    `sent` and `acked` are the whole sets the proxy was sent and accepted (a delta stream keeps
    them by applying each delta), because gating compares them with what the proxy should have.
    """

    subscribed: bool = False
    sent: ResourceSet | None = None
    acked: ResourceSet | None = None
    awaiting_reply: bool = False  # a response was sent that the proxy has not answered yet
    nacked_version: str | None = None
    error: str | None = None
    desired_version: str | None = None  # the version of what the proxy should have now

    @abstractmethod
    def record_sent(self, resources: ResourceSet, nonce: str) -> None:
        """`resources` went out in a response carrying `nonce`."""

    def record_ack(self) -> None:
        """The proxy accepted the response in flight: it has what it was sent."""
        self.awaiting_reply = False
        self.acked = self.sent
        self.nacked_version = None
        self.error = None

    def record_nack(self, error: str) -> None:
        """The proxy rejected the response in flight with `error`, and kept what it had
        (`acked`)."""
        self.awaiting_reply = False
        self.nacked_version = self.sent_version
        self.error = error

    @property
    def sent_version(self) -> str | None:
        # `is not None`, not truth: a ResourceSet's truth is its length, a sum over its parts.
        return self.sent.version if self.sent is not None else None

    @property
    def acked_version(self) -> str | None:
        return self.acked.version if self.acked is not None else None

    @property
    def status(self) -> SyncStatus:
        if self.sent is None:
            return SyncStatus.NOT_SENT
        if self.nacked_version is not None and self.nacked_version == self.sent_version:
            return SyncStatus.NACKED
        if self.acked_version is not None and self.acked_version == self.desired_version:
            return SyncStatus.SYNCED
        return SyncStatus.STALE

    def as_json(self) -> dict[str, str | None]:
        return {
            "sent_version": self.sent_version,
            "acked_version": self.acked_version,
            "nacked_version": self.nacked_version,
            "error": self.error,
            "status": self.status.value,
        }


_Request = TypeVar("_Request", contravariant=True)


class ProtocolStream(ABC, Generic[_Request]):
    """One ADS stream's protocol, without I/O: the server feeds it requests (DiscoveryRequest,
    or DeltaDiscoveryRequest) and writes the responses it makes, holding a push permit while
    any of them is unanswered."""

    ended: bool = False  # the proxy closed the stream, or it broke

    @property
    @abstractmethod
    def types(self) -> Mapping[str, TypeState]:
        """The state of every type, by type URL."""

    @abstractmethod
    def handle_request(self, request: _Request) -> None:
        """Record what one request says (a subscription, an ACK, a NACK)."""

    @abstractmethod
    def wants_push(self) -> bool:
        """Something may be pushed now (unless held back until its dependencies are ACKed)."""

    @abstractmethod
    def next_responses(self) -> list[bytes]:
        """The serialized responses to send now, in push order."""

    @abstractmethod
    def close(self) -> None:
        """The stream ended: let go of what it shared with other streams."""

    @property
    def in_flight(self) -> bool:
        """A response was sent that the proxy has not answered yet."""
        return any(state.awaiting_reply for state in self.types.values())


def record_nack(
    state: TypeState, type_url: str, error: str, node_id: str, metrics: XdsMetrics
) -> None:
    """A proxy rejected what it was sent of `type_url`: recorded, counted and logged."""
    state.record_nack(error)
    metrics.nacked(type_url)
    log.warning(
        "NACK from %s for %s version %s: %s",
        node_id,
        short_name(type_url),
        state.nacked_version,
        error,
    )
