"""An RS256 token issuer for tests: an RSA key, its JWKS and tokens signed with it (RFC 7515,
7517, 7519), made with `cryptography` alone."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Issuer:
    """Signs tokens of `issuer` for `audience` (claims given to `token` override these)."""

    def __init__(self, issuer: str, audience: str = "orders", kid: str = "k1") -> None:
        self.issuer, self.audience, self.kid = issuer, audience, kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        numbers = self.key.public_key().public_numbers()
        key = {"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid}
        return {"keys": [{**key, "n": _uint(numbers.n), "e": _uint(numbers.e)}]}

    def jwks_text(self) -> str:
        return json.dumps(self.jwks())

    def token(self, subject: str = "ann", ttl: float = 600, **claims: Any) -> str:
        """A token valid for `ttl` seconds from now (negative: expired that long ago)."""
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": self.audience, "sub": subject}
        payload |= {"iat": now - 60, "exp": int(now + ttl), **claims}
        return self.sign(payload)

    def sign(self, payload: dict[str, Any]) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": self.kid}
        signed = ".".join(b64url(json.dumps(part).encode()) for part in (header, payload))
        signature = self.key.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signed}.{b64url(signature)}"
