"""What a policy hook receives and may return (contract section 4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Request:
    """The request a hook decides on. `headers` has lower-case names; `path` has no query."""

    source: str | None
    destination: str
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: str = ""


@dataclass(frozen=True)
class Decision:
    """A hook's verdict: allow (with headers added to the request upstream) or deny (status,
    headers and body of the response the caller gets)."""

    allow: bool
    status: int = 403
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""


ALLOW = Decision(True)
DENY = Decision(False)
