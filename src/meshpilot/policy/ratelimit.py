"""`envoy.service.ratelimit.v3.RateLimitService`: the mixer's answer to global rate limits.

A sidecar sends the descriptors its `ratelimit` filter made (see
`translator/envoy/global_rate_limit.py`); each names a limit of the mesh file, which this
service counts in Redis (`counters.py`), so that every mixer using that Redis shares one count.
A request is over the limit when any of its descriptors is. Descriptors naming no limit (the
file changed meanwhile), or, over mTLS, naming a service other than the caller's certificate
does (no workload may use up another's limit), pass uncounted. When Redis cannot be reached
the call fails with UNAVAILABLE and the sidecar lets the request pass (fail open, see the
translator's module).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import duration_pb2
from redis import RedisError

from meshpilot.identity.workload_tls import peer_service
from meshpilot.model import ir, names
from meshpilot.policy.counters import WindowCount, WindowCounters, counter_name

log = logging.getLogger(__name__)
Code = rls_pb2.RateLimitResponse.Code


@dataclass(frozen=True)
class Decision:
    """One counted descriptor, for metrics: `decision` is allowed, limited or error."""

    service: str
    route: str
    decision: str


@dataclass(frozen=True)
class NamedLimit:
    """A descriptor's limit, and the value of its key header ("" when the request had none)."""

    service: str
    route: str | None
    limit: ir.RateLimit
    key_value: str


class GlobalLimits:
    """The mesh file's global limits and the Redis that counts them (replaced when it moves)."""

    def __init__(self) -> None:
        self.mesh = ""
        self._limits: dict[tuple[str, str | None], ir.RateLimit] = {}
        self.counters: WindowCounters | None = None

    async def update(self, mesh: ir.MeshIR) -> None:
        self.mesh = mesh.name
        self._limits = {
            (service.name, route): limit
            for service in mesh.services
            for route, limit in service.limits("global").items()
        }
        redis = mesh.mixer.redis if mesh.mixer else None
        timeout_s = mesh.mixer.timeout_ms / 1000 if mesh.mixer else 0.5
        if self.counters is not None and self.counters.address != redis:
            await self.counters.close()
            self.counters = None
        if redis is not None and self.counters is None:
            self.counters = WindowCounters(redis, timeout_s)

    def named(self, entries: dict[str, str]) -> NamedLimit | None:
        service = entries.get(names.RATE_LIMIT_SERVICE_KEY, "")
        route = entries.get(names.RATE_LIMIT_ROUTE_KEY)
        limit = self._limits.get((service, route))
        if limit is None:
            return None
        value = entries.get(limit.key_header, "") if limit.key_header else ""
        return NamedLimit(service, route, limit, value)

    async def count(self, named: NamedLimit, hits: int) -> WindowCount:
        if self.counters is None:
            raise RedisError("no mixer.redis in the mesh file")
        name = counter_name(self.mesh, named.service, named.route, named.key_value)
        return await self.counters.hit(
            f"{name}:{named.limit.interval_ms}", named.limit.interval_ms, hits
        )

    async def close(self) -> None:
        if self.counters is not None:
            await self.counters.close()


def _status(
    limit: ir.RateLimit, counted: WindowCount
) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    over = counted.count > limit.requests
    return rls_pb2.RateLimitResponse.DescriptorStatus(
        code=Code.OVER_LIMIT if over else Code.OK,
        limit_remaining=max(0, limit.requests - counted.count),
        duration_until_reset=duration_pb2.Duration(
            seconds=counted.ms_left // 1000, nanos=counted.ms_left % 1000 * 1_000_000
        ),
    )


class RateLimitService:
    """Registered with `add_RateLimitServiceServicer_to_server`; `record` hears each decision;
    `mtls`: callers count only against their own service's limits."""

    def __init__(
        self, limits: GlobalLimits, record: Callable[[Decision], None], mtls: bool = False
    ) -> None:
        self.limits = limits
        self.record = record
        self.mtls = mtls
        self._failing = False

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: Any
    ) -> rls_pb2.RateLimitResponse:
        hits = request.hits_addend or 1
        certified = peer_service(context) if self.mtls else None
        statuses = []
        for descriptor in request.descriptors:
            named = self.limits.named({e.key: e.value for e in descriptor.entries})
            if named is not None and self.mtls and named.service != certified:
                log.warning("a limit of '%s' asked by '%s': not counted", named.service, certified)
                named = None
            if named is None:
                statuses.append(rls_pb2.RateLimitResponse.DescriptorStatus(code=Code.OK))
                continue
            try:
                counted = await self.limits.count(named, hits)
            except (RedisError, OSError) as err:
                self._failed(named, err)
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"rate-limit counters: {err}")
            self._recovered()
            status = _status(named.limit, counted)
            over = status.code == Code.OVER_LIMIT
            self.record(
                Decision(named.service, named.route or "", "limited" if over else "allowed")
            )
            statuses.append(status)
        over = any(s.code == Code.OVER_LIMIT for s in statuses)
        return rls_pb2.RateLimitResponse(
            overall_code=Code.OVER_LIMIT if over else Code.OK, statuses=statuses
        )

    def _failed(self, named: NamedLimit, err: Exception) -> None:
        """Counted every time, logged once per outage."""
        self.record(Decision(named.service, named.route or "", "error"))
        if not self._failing:
            log.error("global rate limits pass unchecked: Redis unreachable (%s)", err)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("global rate limits counted again: Redis is back")
        self._failing = False
