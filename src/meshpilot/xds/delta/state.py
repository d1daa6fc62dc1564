"""The state of one type on one incremental (delta) xDS stream."""

from __future__ import annotations

from dataclasses import dataclass, field

from meshpilot.translator.resources import ResourceSet
from meshpilot.xds.protocol import TypeState


@dataclass
class DeltaTypeState(TypeState):
    """Responses carry only what changed, so the state keeps what the proxy has: the whole set
    it accepted (`acked`, for gating and status, as a state-of-the-world stream does) and, after
    a reconnect, the resource versions it says it has until the first response replaces them."""

    subscribed: bool = False
    wildcard: bool = False  # every resource of the type, whatever else is named
    names: frozenset[str] = frozenset()  # named subscriptions
    sent: ResourceSet | None = None
    nonce: str = ""
    awaiting_reply: bool = False
    acked: ResourceSet | None = None
    nacked_version: str | None = None
    error: str | None = None
    desired_version: str | None = None
    # Versions the proxy said it has (`initial_resource_versions`) and no response replaced yet.
    initial: dict[str, str] | None = None
    # Names asked for again (a re-subscription): sent even if unchanged.
    resend: set[str] = field(default_factory=set)

    @property
    def subscription(self) -> frozenset[str] | None:
        """The names to send, None for all of them (wildcard)."""
        return None if self.wildcard else self.names

    def record_sent(self, resources: ResourceSet, nonce: str) -> None:
        self.sent = resources
        self.nonce = nonce
        self.awaiting_reply = True
        self.initial = None
        self.resend.clear()
