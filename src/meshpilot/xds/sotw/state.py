"""The state of one type on one state-of-the-world stream."""

from __future__ import annotations

from dataclasses import dataclass

from meshpilot.translator.resources import ResourceSet
from meshpilot.xds.protocol import TypeState


@dataclass
class SotwTypeState(TypeState):
    """Every response carries the whole set, so ACKing it means having exactly what was sent."""

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

    def record_sent(self, resources: ResourceSet, nonce: str) -> None:
        self.sent = resources
        self.nonce = nonce
        self.resend = False
        self.awaiting_reply = True
