"""The sidecar agent's transport: ask the control plane's certificate service to sign a CSR with
the join token, check the answer (agent.WorkloadKey.accept: the pinned CA, this key, exactly the
token's service), hand them to observers (the SDS server), and renew at about half the
lifetime.

Over TLS (the default) the channel trusts only the CA the token pins (tls.pinned_anchor); with
`insecure=True` the channel is plaintext, but the certificate is still accepted only if it leads
to the pinned CA. Each renewal makes a new key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from meshpilot.identity.admission import AUTHORIZATION, BEARER
from meshpilot.identity.agent import (
    CertificateRefused,
    Credentials,
    WorkloadKey,
    renewal_time,
)
from meshpilot.identity.errors import IdentityError
from meshpilot.identity.service import FULL_METHOD, decode_response, encode_request
from meshpilot.identity.spiffe import parse_spiffe_id
from meshpilot.identity.state import read_file
from meshpilot.identity.tls import Clock, ControlPlaneUnreachable, pinned_anchor, utc_now
from meshpilot.identity.tokens import Grant, read_token

log = logging.getLogger(__name__)

# After a failed attempt, try again this soon (doubling up to RETRY_MAX_S).
RETRY_MIN_S = 1.0
RETRY_MAX_S = 60.0
# Before the first certificate, while the control plane is not there: as quickly as Envoy.
FIRST_RETRY_S = 0.2
FIRST_RETRY_MAX_S = 5.0
CALL_TIMEOUT_S = 10.0
# A refusal that says the replica could not be asked (or had no CA yet): another may answer.
_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def read_token_file(path: Path, service: str | None = None) -> str:
    """The join token in `path`, checked for form (only the control plane can verify it) and,
    given `service`, that it grants that service."""
    token = read_file(path, secret=False).decode("utf-8", "replace").strip()
    try:
        grant = read_token(token)
    except IdentityError as err:
        raise IdentityError(f"'{path}': {err}") from None
    if service is not None and grant.service != service:
        raise IdentityError(
            f"'{path}' is a join token for service '{grant.service}', not '{service}'"
        )
    return token


class SigningRefused(IdentityError):
    """The control plane refused to sign (its gRPC status and message)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"the control plane refused the certificate request: {message}")
        self.code = code


class CertificateClient:
    """One channel to the certificate service, authenticated as the CA the token pins. With
    `fallbacks` (the other control-plane replicas), a call that finds its replica unreachable
    moves the channel to the next one, so the retry asks that one (replicas share one CA)."""

    def __init__(
        self, address: str, token: str, *, insecure: bool = False, fallbacks: Sequence[str] = ()
    ) -> None:
        self.address = address
        self._addresses = [address, *fallbacks]
        self.token = token.strip()
        self.grant: Grant = read_token(self.token)
        self.insecure = insecure
        self._channel: grpc.aio.Channel | None = None

    async def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self.insecure:
                self._channel = grpc.aio.insecure_channel(self.address)
            else:
                anchor = await asyncio.to_thread(
                    pinned_anchor, self.address, self.grant.ca_fingerprint
                )
                credentials = grpc.ssl_channel_credentials(root_certificates=anchor)
                self._channel = grpc.aio.secure_channel(self.address, credentials)
        return self._channel

    async def sign(self, key: WorkloadKey, now: dt.datetime | None = None) -> Credentials:
        """Credentials for `key`, signed by the control plane and checked."""
        try:
            return await self._sign(key, now)
        except (ControlPlaneUnreachable, SigningRefused) as err:
            if not isinstance(err, SigningRefused) or err.code in _UNREACHABLE:
                await self._next_replica()
            raise

    async def _next_replica(self) -> None:
        if len(self._addresses) > 1:
            await self.close()
            self._addresses.append(self._addresses.pop(0))
            self.address = self._addresses[0]

    async def _sign(self, key: WorkloadKey, now: dt.datetime | None) -> Credentials:
        channel = await self._open()
        call = channel.unary_unary(FULL_METHOD, response_deserializer=decode_response)
        try:
            response = await call(
                encode_request(key.csr()),
                metadata=((AUTHORIZATION, BEARER + self.token),),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            raise SigningRefused(err.code(), err.details() or str(err.code())) from None
        spiffe_id = parse_spiffe_id(response.spiffe_id)
        if spiffe_id.service != self.grant.service:
            raise CertificateRefused(
                f"the control plane signed {spiffe_id}, not service '{self.grant.service}'"
            )
        return key.accept(response.certificate_chain, self.grant.ca_fingerprint, spiffe_id, now)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class IdentityAgent:
    """Keeps valid credentials, and tells `observers` (the SDS server) of each new set.

    `renew()` gets new credentials at once; `run()` does so whenever they are due by `clock`,
    and `wake()` makes it look at the clock again (a test's clock moved, say)."""

    def __init__(
        self,
        client: CertificateClient,
        clock: Clock = utc_now,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.client = client
        self.observers: list[Callable[[Credentials], None]] = []
        self.clock = clock
        self.jitter = jitter
        self.credentials: Credentials | None = None
        self.renew_at: dt.datetime | None = None
        self.renewals = 0
        self.failures = 0
        self._wakeup = asyncio.Event()

    async def renew(self) -> Credentials:
        credentials = await self.client.sign(WorkloadKey(), self.clock())
        self.credentials = credentials
        for observer in self.observers:
            observer(credentials)
        self.renew_at = renewal_time(credentials, self.jitter)
        self.renewals += 1
        log.info(
            "certificate for %s valid until %s, renewing at %s",
            self.client.grant.service,
            credentials.certificate.not_valid_after_utc,
            self.renew_at,
        )
        return credentials

    async def first_credentials(self) -> Credentials:
        """The first certificate, retried while the control plane is unreachable or has no CA
        yet (started together with its workloads, say); any other refusal is final."""
        delay = FIRST_RETRY_S
        while True:
            try:
                return await self.renew()
            except (ControlPlaneUnreachable, SigningRefused) as err:
                if isinstance(err, SigningRefused) and err.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                log.warning("no certificate yet, retrying in %.1f s: %s", delay, err)
                await asyncio.sleep(delay)
                delay = min(delay * 2, FIRST_RETRY_MAX_S)

    def wake(self) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        """Renew whenever due, until cancelled; failures are retried with a growing delay."""
        retry = RETRY_MIN_S
        while True:
            if self.renew_at is None or self.clock() >= self.renew_at:
                try:
                    await self.renew()
                    retry = RETRY_MIN_S
                except IdentityError as err:
                    self.failures += 1
                    log.warning("certificate renewal failed, retrying in %.0f s: %s", retry, err)
                    await self._sleep(retry)
                    retry = min(retry * 2, RETRY_MAX_S)
                    continue
            assert self.renew_at is not None
            await self._sleep((self.renew_at - self.clock()).total_seconds())

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` pass or `wake()` is called (also before this call: not lost)."""
        try:
            await asyncio.wait_for(self._wakeup.wait(), max(0.0, seconds))
        except TimeoutError:
            return
        self._wakeup.clear()
