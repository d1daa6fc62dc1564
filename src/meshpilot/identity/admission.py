"""Who may ask the control plane for what: the join token in a call's metadata, checked.

Both of the control plane's doors use it: the certificate service (a CSR is signed for the
service the token grants) and ADS (a stream is admitted only for the node the token grants).
ADS admission, in a secure control plane:

- UNAUTHENTICATED: no token, or one that does not verify (malformed, altered, another mesh's,
  expired, revoked: tokens are checked at every connect, so revoking one refuses its next one);
- PERMISSION_DENIED: the node claims another service or other labels than the token grants, or
  registers an endpoint address other than its connection's source, unless the token allows any
  address (`meshpilot token --any-address`);
- UNAVAILABLE: the control plane has no mesh identity (no usable mesh file) yet;
- RESOURCE_EXHAUSTED: too many sidecars joined at once with one token, or as one service
  (`JoinLimits`): a leaked or compromised token cannot flood a service with endpoints.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence

import grpc

from meshpilot.identity.authority import MeshIdentity
from meshpilot.identity.errors import (
    TokenError,
    TokenExpired,
    TokenRevoked,
    TokenSignatureInvalid,
    TokenWrongMesh,
)
from meshpilot.identity.tokens import Grant
from meshpilot.model.proxies import Proxy
from meshpilot.wording import counted

AUTHORIZATION = "authorization"
BEARER = "Bearer "
Metadata = Sequence[tuple[str, str | bytes]]

# Why a token was refused: the `reason` label of the refusal counters.
_TOKEN_REASONS: Sequence[tuple[type[TokenError], str]] = (
    (TokenExpired, "token_expired"),
    (TokenRevoked, "token_revoked"),
    (TokenWrongMesh, "token_wrong_mesh"),
    (TokenSignatureInvalid, "token_signature"),
)


class Refused(Exception):
    """A call the control plane does not honour: its gRPC status, counter reason and message."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def bearer_token(metadata: Metadata) -> str | None:
    for key, value in metadata:
        if key == AUTHORIZATION and isinstance(value, str) and value.startswith(BEARER):
            return value.removeprefix(BEARER).strip() or None
    return None


def verified_grant(identity: MeshIdentity | None, metadata: Metadata) -> Grant:
    """The grant of the valid join token in `metadata`, or Refused."""
    if identity is None:
        raise Refused(
            grpc.StatusCode.UNAVAILABLE,
            "no_ca",
            "the control plane has no usable mesh file, hence no CA, yet",
        )
    token = bearer_token(metadata)
    if token is None:
        raise Refused(
            grpc.StatusCode.UNAUTHENTICATED,
            "no_token",
            "no join token (metadata `authorization: Bearer <token>`)",
        )
    try:
        return identity.tokens.verify(token)
    except TokenError as err:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, _reason(err), str(err)) from None


def admit_stream(
    identity: MeshIdentity | None, proxy: Proxy, metadata: Metadata, peer: str
) -> Grant:
    """The grant under which `proxy`, connected from gRPC peer `peer`, may join; or Refused."""
    grant = verified_grant(identity, metadata)
    if proxy.service != grant.service:
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "wrong_service",
            f"node {proxy.node_id!r} claims service '{proxy.service}', its token "
            f"{grant.token_id} grants '{grant.service}'",
        )
    if dict(proxy.labels) != dict(grant.labels):
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "wrong_labels",
            f"node {proxy.node_id!r} claims labels {dict(proxy.labels)}, its token "
            f"{grant.token_id} grants {dict(grant.labels)}",
        )
    source = peer_ip(peer)
    if not grant.any_address and source != ipaddress.ip_address(proxy.ip):
        raise Refused(
            grpc.StatusCode.PERMISSION_DENIED,
            "wrong_address",
            f"node {proxy.node_id!r} registers {proxy.ip} but connects from {source or peer}; "
            "a token made with --any-address allows that",
        )
    return grant


# Sidecars joined at once: per token (a token is usually one instance's, or one deployment's),
# and per service identity (all its instances).
MAX_PER_TOKEN = 64
MAX_PER_SERVICE = 10_000


class JoinLimits:
    """Counts the streams joined under each token and each service; `join` refuses one over a
    limit and returns what to call when the stream ends."""

    def __init__(self, per_token: int = MAX_PER_TOKEN, per_service: int = MAX_PER_SERVICE) -> None:
        self.per_token = per_token
        self.per_service = per_service
        self._tokens: Counter[str] = Counter()
        self._services: Counter[str] = Counter()

    def join(self, grant: Grant) -> Callable[[], None]:
        if self._tokens[grant.token_id] >= self.per_token:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "token_instances",
                f"token {grant.token_id} already has "
                f"{counted(self.per_token, 'sidecar')} connected",
            )
        if self._services[grant.service] >= self.per_service:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "service_instances",
                f"service '{grant.service}' already has "
                f"{counted(self.per_service, 'sidecar')} connected",
            )
        self._tokens[grant.token_id] += 1
        self._services[grant.service] += 1
        return lambda: self._leave(grant)

    def _leave(self, grant: Grant) -> None:
        for counts, key in ((self._tokens, grant.token_id), (self._services, grant.service)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]  # tokens come and go: keep only those in use


def peer_ip(peer: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of a gRPC peer string (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`), None for other kinds."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = rest.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _reason(err: TokenError) -> str:
    for kind, reason in _TOKEN_REASONS:
        if isinstance(err, kind):
            return reason
    return "token_malformed"
