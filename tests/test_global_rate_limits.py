"""Global rate limits in the mixer: fixed-window counters in a real Redis, shared by every
counter (mixer) that uses it, and the rate-limit gRPC service Envoy calls, over a real channel."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from meshpilot.identity.ca import CertificateAuthority
from meshpilot.mesh.load import parse_mesh
from meshpilot.policy.counters import WindowCounters, counter_name
from meshpilot.policy.ratelimit import Decision, GlobalLimits, RateLimitService
from meshpilot.runner.addresses import LoopbackAllocator
from meshpilot.translator.build import build_ir
from tests.support.certs import client_credentials, workload_credentials
from tests.support.redis import REDIS_PORT, running_redis
from tests.support.wait import wait_for_async

OK = rls_pb2.RateLimitResponse.Code.OK
OVER = rls_pb2.RateLimitResponse.Code.OVER_LIMIT


@pytest.fixture
def ip() -> Iterator[str]:
    allocator = LoopbackAllocator()
    yield allocator.ip()
    allocator.release()


@pytest.fixture
def redis_server(ip: str) -> Iterator[subprocess.Popen[bytes]]:
    with running_redis(ip) as server:
        yield server


@pytest.fixture
def redis_address(ip: str, redis_server: subprocess.Popen[bytes]) -> str:
    return f"{ip}:{REDIS_PORT}"


@pytest.fixture
async def counters(redis_address: str) -> AsyncIterator[WindowCounters]:
    counting = WindowCounters(redis_address, timeout_s=1.0)
    yield counting
    await counting.close()


async def test_hits_count_up_within_a_window_and_each_name_apart(
    counters: WindowCounters,
) -> None:
    counts = [(await counters.hit("a", 3_600_000)).count for _ in range(3)]
    other = await counters.hit("b", 3_600_000, hits=5)
    assert counts == [1, 2, 3]
    assert other.count == 5
    assert 0 < other.ms_left <= 3_600_000


async def test_a_new_window_starts_from_zero_and_old_keys_expire(
    counters: WindowCounters, redis_address: str
) -> None:
    first = await counters.hit("short", 200)
    assert first.count >= 1 and first.ms_left <= 200

    # Polling hits until one lands in a fresh window: that hit is its first.
    async def first_of_a_window() -> bool:
        return (await counters.hit("short", 200)).count == 1

    await wait_for_async(first_of_a_window, 5.0, message="a new window")
    host, _, port = redis_address.rpartition(":")
    async with aioredis.Redis(host=host, port=int(port)) as client:
        keys = await client.keys("short:*")
        ttls = [await client.pttl(key) for key in keys]
    assert ttls and all(0 < ttl <= 200 + 1000 for ttl in ttls), ttls


async def test_two_mixers_share_one_count_and_concurrent_hits_are_atomic(
    counters: WindowCounters, redis_address: str
) -> None:
    other_mixer = WindowCounters(redis_address, timeout_s=1.0)
    try:
        hits = [counters.hit("shared", 60_000) for _ in range(25)]
        hits += [other_mixer.hit("shared", 60_000) for _ in range(25)]
        counts = sorted(c.count for c in await asyncio.gather(*hits))
    finally:
        await other_mixer.close()
    assert counts == list(range(1, 51))


def test_counter_names_cannot_collide() -> None:
    assert counter_name("m", "a:b", None, "") != counter_name("m", "a", "b", "")
    assert counter_name("m", "a", None, "") != counter_name("m", "a", "", "")


MESH = """\
mesh: m
mixer: {redis: REDIS}
services:
  reviews:
    port: 9080
    rate_limit: {rate: 2 per 1h, scope: global}
    routes:
      - name: per-user
        match: {path_prefix: /user}
        rate_limit: {rate: 1 per 1h, key: {header: x-user}, scope: global}
      - name: rest
"""


def descriptor(*entries: tuple[str, str]) -> ratelimit_pb2.RateLimitDescriptor:
    return ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )


SERVICE = ("service", "reviews")


class Served:
    """The service on a real gRPC port, its client stub and the decisions it recorded."""

    def __init__(self, stub: rls_pb2_grpc.RateLimitServiceStub, decisions: list[Decision]) -> None:
        self.stub, self.decisions = stub, decisions

    async def ask(
        self, *descriptors: ratelimit_pb2.RateLimitDescriptor
    ) -> rls_pb2.RateLimitResponse:
        request = rls_pb2.RateLimitRequest(domain="meshpilot", descriptors=descriptors)
        response: rls_pb2.RateLimitResponse = await self.stub.ShouldRateLimit(request, timeout=5)
        return response


@contextlib.asynccontextmanager
async def serving(
    ip: str, redis_address: str, ca: CertificateAuthority | None = None, caller: str = ""
) -> AsyncIterator[Served]:
    """The service on a real gRPC port: plaintext, or with `ca` mTLS and a client presenting
    `caller`'s workload certificate."""
    limits = GlobalLimits()
    await limits.update(build_ir(parse_mesh(MESH.replace("REDIS", redis_address), "mesh.yaml")))
    decisions: list[Decision] = []
    server = grpc.aio.server()
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
        RateLimitService(limits, decisions.append, mtls=ca is not None), server
    )
    if ca is None:
        port = server.add_insecure_port(f"{ip}:0")
        channel = grpc.aio.insecure_channel(f"{ip}:{port}")
    else:
        served = ca.server_certificate([], [ip])
        anchor = ca.trust_anchor.public_bytes(serialization.Encoding.PEM)
        port = server.add_secure_port(
            f"{ip}:0",
            grpc.ssl_server_credentials(
                [(served.key_pem, served.chain_pem)], anchor, require_client_auth=True
            ),
        )
        workload = client_credentials(anchor, workload_credentials(ca, caller))
        channel = grpc.aio.secure_channel(f"{ip}:{port}", workload)
    await server.start()
    try:
        yield Served(rls_pb2_grpc.RateLimitServiceStub(channel), decisions)
    finally:
        await channel.close()
        await server.stop(grace=None)
        await limits.close()


@pytest.fixture
async def served(ip: str, redis_address: str) -> AsyncIterator[Served]:
    async with serving(ip, redis_address) as service:
        yield service


async def test_over_mtls_a_caller_counts_only_against_its_own_services_limits(
    ip: str, redis_address: str, tmp_path: Path
) -> None:
    ca = CertificateAuthority.open(tmp_path / "ca", "demo")
    async with serving(ip, redis_address, ca, caller="ratings") as other:
        forged = [(await other.ask(descriptor(SERVICE))).overall_code for _ in range(3)]
    async with serving(ip, redis_address, ca, caller="reviews") as own:
        counted = [(await own.ask(descriptor(SERVICE))).overall_code for _ in range(3)]
    assert forged == [OK] * 3 and other.decisions == []
    assert counted == [OK, OK, OVER]  # reviews' count was untouched by ratings' calls


async def test_a_service_limit_allows_its_requests_then_is_over(served: Served) -> None:
    codes = [(await served.ask(descriptor(SERVICE))).overall_code for _ in range(4)]
    assert codes == [OK, OK, OVER, OVER]
    assert [d.decision for d in served.decisions] == ["allowed"] * 2 + ["limited"] * 2
    assert {(d.service, d.route) for d in served.decisions} == {("reviews", "")}


async def test_a_keyed_route_limit_counts_each_value_apart(served: Served) -> None:
    def user(name: str) -> ratelimit_pb2.RateLimitDescriptor:
        return descriptor(SERVICE, ("route", "per-user"), ("x-user", name))

    ann = [(await served.ask(user("ann"))).overall_code for _ in range(2)]
    bob = (await served.ask(user("bob"))).overall_code
    nobody = (await served.ask(descriptor(SERVICE, ("route", "per-user")))).overall_code
    assert (ann, bob, nobody) == ([OK, OVER], OK, OK)
    # The route's count is its own: the service's limit still has both requests.
    assert (await served.ask(descriptor(SERVICE))).statuses[0].limit_remaining == 1


async def test_a_descriptor_naming_no_limit_passes_uncounted(served: Served) -> None:
    response = await served.ask(descriptor(("service", "ratings")))
    assert response.overall_code == OK and served.decisions == []


async def test_without_redis_the_call_fails_unavailable(
    redis_server: subprocess.Popen[bytes], served: Served
) -> None:
    assert (await served.ask(descriptor(SERVICE))).overall_code == OK
    redis_server.terminate()
    redis_server.wait(timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await served.ask(descriptor(SERVICE))
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert served.decisions[-1] == Decision("reviews", "", "error")
