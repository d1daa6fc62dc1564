"""Per proxy and resource type: what was sent, what Envoy accepted or rejected."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from meshpilot.translator.resources import ResourceSet


class SyncStatus(StrEnum):
    SYNCED = "SYNCED"
    STALE = "STALE"
    NACKED = "NACKED"
    NOT_SENT = "NOT_SENT"


@dataclass
class TypeSync:
    """The state of one type on one ADS stream (state-of-the-world protocol)."""

    subscribed: bool = False
    names: frozenset[str] | None = None  # None: wildcard subscription
    names_key: bytes | None = None  # the encoded names `names` was read from (see Subscriptions)
    sent: ResourceSet | None = None
    nonce: str = ""
    awaiting_reply: bool = False
    resend: bool = False  # Envoy asked again for what it was sent: send it again
    acked: ResourceSet | None = None
    nacked_version: str | None = None
    error: str | None = None
    desired_version: str | None = None

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

    def record_ack(self) -> None:
        self.awaiting_reply = False
        self.acked = self.sent
        self.nacked_version = None
        self.error = None

    def record_nack(self, error: str) -> None:
        self.awaiting_reply = False
        self.nacked_version = self.sent_version
        self.error = error

    def as_json(self) -> dict[str, str | None]:
        return {
            "sent_version": self.sent_version,
            "acked_version": self.acked_version,
            "nacked_version": self.nacked_version,
            "error": self.error,
            "status": self.status.value,
        }
