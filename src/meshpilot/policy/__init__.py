"""Access policy: what hooks receive (`Request`) and may return (`Decision`)."""

from meshpilot.policy.decision import Decision, Request

__all__ = ["Decision", "Request"]
