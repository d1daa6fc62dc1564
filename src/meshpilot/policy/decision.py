"""What a policy hook receives and may return (contract section 4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Request:
    """The request a hook decides on. `headers` has lower-case names; `path` has no query.
    `claims`: the payload of the token the destination verified ({}: none)."""

    source: str | None
    destination: str
    method: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def principal(self) -> str | None:
        """`ISSUER/SUBJECT` of the verified token, as policies' `request_principals` name it."""
        issuer = self.claims.get("iss")
        return None if issuer is None else f"{issuer}/{self.claims.get('sub', '')}"


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
