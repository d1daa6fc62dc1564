"""What can go wrong with workload identity, as MeshpilotErrors a user can read."""

from __future__ import annotations

from meshpilot.errors import MeshpilotError


class IdentityError(MeshpilotError):
    """Base of the identity errors: SPIFFE IDs, the CA, join tokens, the state directory."""


class InvalidSpiffeId(IdentityError):
    """A SPIFFE ID or trust domain that does not follow the SPIFFE rules or meshpilot's form."""


class CaError(IdentityError):
    """The CA cannot be loaded or created (missing, unreadable or mismatched files)."""


class CsrRejected(IdentityError):
    """A certificate signing request that the CA refuses to sign."""


class TokenError(IdentityError):
    """A join token that must not be honoured; subclasses say why."""


class TokenMalformed(TokenError):
    """Not a meshpilot join token at all (wrong shape, bad encoding, missing fields)."""


class TokenSignatureInvalid(TokenError):
    """The token was not signed by this control plane's token key, or was altered."""


class TokenExpired(TokenError):
    """The token's expiry is in the past."""


class TokenRevoked(TokenError):
    """The token's id is on the revocation list."""


class TokenWrongMesh(TokenError):
    """The token was issued for another mesh."""
