"""Join tokens: what a sidecar presents to prove which service (and labels) it may act for.

A token is `mpt1.<payload>.<signature>`, both parts base64url without padding: the payload is
compact JSON (mesh, service, labels, issued-at, expiry, a random token id, the key id, and the
SHA-256 fingerprint of the mesh CA's trust anchor, which is all a sidecar needs to verify the
control plane's TLS certificate), the signature an Ed25519 signature of `mpt1.<payload>`. Like a
JWT, without a JWT library and without an `alg` header: one algorithm, so no algorithm
confusion (`none`, HS256 with a public key as secret) is possible.

Why Ed25519, with a signing key kept in the state directory (`tokens/signing-key.pem`, 0600):
- asymmetric: whatever verifies tokens (another control-plane replica, later) needs only the
  public key and cannot mint tokens; with HMAC every verifier could forge them;
- deterministic signatures (no per-signature nonce to get wrong, unlike ECDSA), small (64
  bytes, so a token fits on a command line) and fast (tens of thousands of checks per second).

Revocation: `revoke(token_id)` appends the id to `tokens/revoked` in the state directory; a
running control plane sees the change at the next verification (it re-reads the file when its
size or modification time changes), so `meshpilot token --revoke ID` works while `serve` runs.
Tokens are checked when a sidecar connects: a revoked or expired token is refused at the next
connect, not in the middle of a stream.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshpilot.identity.errors import (
    IdentityError,
    TokenError,
    TokenExpired,
    TokenMalformed,
    TokenRevoked,
    TokenSignatureInvalid,
    TokenWrongMesh,
)
from meshpilot.identity.spiffe import check_service_name
from meshpilot.identity.state import create_file, private_dir, read_file

PREFIX = "mpt1"
DEFAULT_TTL = dt.timedelta(days=30)
SIGNING_KEY = Path("tokens") / "signing-key.pem"
REVOKED = Path("tokens") / "revoked"
_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Grant:
    """What a valid token allows: to act for `service` with `labels` in `mesh` until expiry."""

    mesh: str
    service: str
    labels: Mapping[str, str] = field(hash=False)
    token_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    ca_fingerprint: str
    key_id: str
    # The endpoint address a sidecar registers must be its stream's peer address, unless the
    # token says any will do (a sidecar behind NAT or a proxy).
    any_address: bool = False


class TokenAuthority:
    """Issues and verifies the join tokens of one mesh with the state directory's token key."""

    def __init__(
        self, key: Ed25519PrivateKey, mesh: str, ca_fingerprint: str, revoked: Path
    ) -> None:
        if not _FINGERPRINT.fullmatch(ca_fingerprint):
            raise IdentityError(f"'{ca_fingerprint}' is not a sha256:<hex> fingerprint")
        self.mesh = mesh
        self.ca_fingerprint = ca_fingerprint
        self._key = key
        self._public_key = key.public_key()
        self.key_id = _key_id(key)
        self._revocations = RevocationList(revoked)
        # Revoked through the store that replicas share (`identity/shared.py`), kept current
        # by the control plane.
        self.shared_revocations: frozenset[str] = frozenset()

    @classmethod
    def open(cls, state_dir: Path, mesh: str, ca_fingerprint: str) -> TokenAuthority:
        """The authority of `mesh`, with the token key in `state_dir` (generated if absent)."""
        key_path = state_dir / SIGNING_KEY
        if not key_path.exists():
            pem = new_signing_key_pem()
            private_dir(key_path.parent)
            if create_file(key_path, pem, secret=True):
                return cls.from_pem(pem, mesh, ca_fingerprint, state_dir / REVOKED)
        pem = read_file(key_path, secret=True)
        return cls.from_pem(pem, mesh, ca_fingerprint, state_dir / REVOKED, f"'{key_path}'")

    @classmethod
    def from_pem(
        cls,
        pem: bytes,
        mesh: str,
        ca_fingerprint: str,
        revoked: Path,
        name: str = "the token key",
    ) -> TokenAuthority:
        """The authority of `mesh` with the token key `pem` (`name` says where it came from)."""
        try:
            loaded = serialization.load_pem_private_key(pem, None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise IdentityError(f"{name} holds no unencrypted private key") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise IdentityError(f"{name} is not an Ed25519 key")
        return cls(loaded, mesh, ca_fingerprint, revoked)

    def issue(
        self,
        service: str,
        labels: Mapping[str, str] | None = None,
        ttl: dt.timedelta = DEFAULT_TTL,
        now: dt.datetime | None = None,
        any_address: bool = False,
    ) -> str:
        """A token granting `service` with `labels` for `ttl` from `now`."""
        check_service_name(service)
        if ttl <= dt.timedelta(0):
            raise IdentityError(f"a token's lifetime must be positive, not {ttl}")
        issued = int((now or dt.datetime.now(dt.UTC)).timestamp())
        payload = {
            "mesh": self.mesh,
            "svc": service,
            "labels": dict(sorted((labels or {}).items())),
            "iat": issued,
            "exp": issued + int(ttl.total_seconds()),
            "jti": secrets.token_urlsafe(16),
            "ca": self.ca_fingerprint,
            "kid": self.key_id,
        }
        if any_address:
            payload["any_addr"] = True
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signed = f"{PREFIX}.{body}"
        return f"{signed}.{_b64(self._key.sign(signed.encode()))}"

    def verify(self, token: str, now: dt.datetime | None = None) -> Grant:
        """The grant of a valid token; a TokenError saying why otherwise."""
        grant = read_token(token)
        if grant.key_id != self.key_id:
            raise TokenSignatureInvalid(
                f"token {grant.token_id} was signed by another token key ({grant.key_id}, "
                f"this control plane's is {self.key_id})"
            )
        signed, _, signature = token.strip().rpartition(".")
        try:
            self._public_key.verify(_unb64(signature), signed.encode())
        except InvalidSignature:
            raise TokenSignatureInvalid(
                "the token's signature does not match: it was altered or not issued here"
            ) from None
        if grant.mesh != self.mesh:
            raise TokenWrongMesh(
                f"token {grant.token_id} is for mesh '{grant.mesh}', not '{self.mesh}'"
            )
        if (now or dt.datetime.now(dt.UTC)) >= grant.expires_at:
            raise TokenExpired(f"token {grant.token_id} expired at {grant.expires_at:%F %T}Z")
        if grant.token_id in self.shared_revocations or grant.token_id in self._revocations:
            raise TokenRevoked(f"token {grant.token_id} has been revoked")
        return grant

    def revoke(self, token_id: str) -> None:
        self._revocations.add(token_id)


def new_signing_key_pem() -> bytes:
    """A new Ed25519 token key, PEM (PKCS#8, unencrypted: kept 0600 or in the store)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def revoke_token(state_dir: Path, token_id: str) -> None:
    """Revoke a token of the mesh served with `state_dir`, without opening its signing key."""
    RevocationList(state_dir / REVOKED).add(token_id)


class RevocationList:
    """Revoked token ids, one a line in a file that other processes may append to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._ids: frozenset[str] = frozenset()

    def __contains__(self, token_id: object) -> bool:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return False
        except OSError as err:
            # Failing open would honour revoked tokens: refuse every token instead.
            raise TokenError(f"cannot read the revocation list '{self.path}': {err}") from None
        seen = (info.st_ino, info.st_size, info.st_mtime_ns)
        if seen != self._seen:
            self._ids = frozenset(read_file(self.path, secret=False).decode().split())
            self._seen = seen
        return token_id in self._ids

    def add(self, token_id: str) -> None:
        check_token_id(token_id)
        private_dir(self.path.parent)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            with os.fdopen(fd, "a") as out:
                out.write(token_id + "\n")
        except OSError as err:
            raise IdentityError(f"cannot write '{self.path}': {err.strerror}") from None


def check_token_id(token_id: str) -> str:
    if not _TOKEN_ID.fullmatch(token_id):
        raise IdentityError(f"'{token_id}' is not a token id")
    return token_id


def read_token(token: str) -> Grant:
    """What a token claims, NOT verified: for the sidecar, which has no means to verify it but
    needs its service and CA fingerprint, and as the first step of `verify`."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenMalformed(f"not a meshpilot join token (expected {PREFIX}.<payload>.<sig>)")
    try:
        claims = json.loads(_unb64(parts[1]))
        grant = Grant(
            mesh=_text(claims["mesh"]),
            service=check_service_name(_text(claims["svc"])),
            labels=_labels(claims["labels"]),
            token_id=_text(claims["jti"]),
            issued_at=_time(claims["iat"]),
            expires_at=_time(claims["exp"]),
            ca_fingerprint=_text(claims["ca"]),
            key_id=_text(claims["kid"]),
            any_address=claims.get("any_addr", False) is True,
        )
    except (ValueError, TypeError, KeyError, IdentityError) as err:
        raise TokenMalformed(f"the token's payload is not valid ({err})") from None
    return grant


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _time(value: object) -> dt.datetime:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected a timestamp, got {type(value).__name__}")
    return dt.datetime.fromtimestamp(value, dt.UTC)


def _labels(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("labels must be a mapping")
    return {_text(k): _text(v) for k, v in value.items()}


def _key_id(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise TokenMalformed("a token part is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenMalformed("a token part is not base64url") from None
