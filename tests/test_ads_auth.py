"""ADS admission in a secure control plane: only a sidecar with a join token for what its node
claims may join (the rogue-sidecar attacks of issue #12), and no node may register an endpoint
address Envoy cannot parse, in any mode."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshpilot.controlplane import ControlPlane
from meshpilot.identity.admission import JoinLimits, Refused
from meshpilot.identity.authority import MeshIdentity
from meshpilot.identity.tokens import TokenAuthority
from meshpilot.model.ir import labels_of
from meshpilot.model.names import outbound_cluster
from meshpilot.model.proxies import Proxy
from meshpilot.xds.types import BY_SHORT
from tests.support.client import AdsClient, sidecar_node
from tests.support.controlplane import running_control_plane
from tests.support.wait import wait_for_async
from tests.test_identity_service import trusting

MESH = """\
mesh: demo
services:
  reviews: {port: 9080}
  ratings: {port: 9081}
"""
REFUSED = "meshpilot_xds_streams_refused_total"
CDS = BY_SHORT["cds"].url
EDS = BY_SHORT["eds"].url


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with running_control_plane(tmp_path, MESH, state_dir=tmp_path / "state", tls=True) as cp:
        yield cp


def tokens(plane: ControlPlane) -> TokenAuthority:
    assert isinstance(plane.identity, MeshIdentity)
    return plane.identity.tokens


def reviews(ip: str = "127.0.0.1", version: str = "v1", service: str = "reviews") -> Proxy:
    return Proxy(f"{service}~{ip}", service, ip, 8080, labels_of({"version": version}))


async def join(plane: ControlPlane, proxy: Proxy, token: str | None) -> None:
    """Open a stream as `proxy` with `token` and fetch the clusters: it must be served."""
    node = sidecar_node(proxy)
    async with AdsClient(plane.ads.address, node, trusting(plane), token) as client:
        assert (await client.fetch(CDS)).resources


async def refused(plane: ControlPlane, proxy: Proxy, token: str | None) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await join(plane, proxy, token)
    return raised.value.code()


def count(plane: ControlPlane, reason: str) -> float:
    return plane.metrics.value(REFUSED, {"reason": reason})


async def test_a_sidecar_with_a_token_for_what_it_claims_joins(plane: ControlPlane) -> None:
    await join(plane, reviews(), tokens(plane).issue("reviews", {"version": "v1"}))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "no_token"),
        ("mpt1.garbage.garbage", "token_malformed"),
        ("expired", "token_expired"),
        ("revoked", "token_revoked"),
    ],
)
async def test_no_valid_token_is_unauthenticated(
    plane: ControlPlane, token: str | None, reason: str
) -> None:
    authority = tokens(plane)
    if token == "expired":
        long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
        token = authority.issue("reviews", {"version": "v1"}, dt.timedelta(days=1), long_ago)
    elif token == "revoked":
        token = authority.issue("reviews", {"version": "v1"})
        await join(plane, reviews(), token)  # honoured until revoked, refused at the next connect
        authority.revoke(authority.verify(token).token_id)
    assert await refused(plane, reviews(), token) == grpc.StatusCode.UNAUTHENTICATED
    assert count(plane, reason) == 1


async def test_another_meshs_token_is_unauthenticated(plane: ControlPlane, tmp_path: Path) -> None:
    other = TokenAuthority.open(tmp_path / "other", "other", tokens(plane).ca_fingerprint)
    token = other.issue("reviews", {"version": "v1"})
    assert await refused(plane, reviews(), token) == grpc.StatusCode.UNAUTHENTICATED
    assert count(plane, "token_signature") == 1


@pytest.mark.parametrize(
    ("proxy", "reason"),
    [
        (reviews(service="ratings"), "wrong_service"),
        (reviews(version="v2"), "wrong_labels"),
    ],
)
async def test_a_node_claiming_more_than_its_token_grants_is_denied(
    plane: ControlPlane, proxy: Proxy, reason: str
) -> None:
    token = tokens(plane).issue("reviews", {"version": "v1"})
    assert await refused(plane, proxy, token) == grpc.StatusCode.PERMISSION_DENIED
    assert count(plane, reason) == 1


async def test_the_endpoint_address_must_be_the_connections_source(plane: ControlPlane) -> None:
    elsewhere = reviews(ip="127.0.0.9")  # this client connects from 127.0.0.1
    token = tokens(plane).issue("reviews", {"version": "v1"})
    assert await refused(plane, elsewhere, token) == grpc.StatusCode.PERMISSION_DENIED
    assert count(plane, "wrong_address") == 1
    anywhere = tokens(plane).issue("reviews", {"version": "v1"}, any_address=True)
    await join(plane, elsewhere, anywhere)


@pytest.mark.parametrize("tls", [True, False])
async def test_a_node_ip_that_is_not_an_ip_is_refused_in_every_mode(
    tmp_path: Path, tls: bool
) -> None:
    async with running_control_plane(
        tmp_path, MESH, state_dir=tmp_path / "state", tls=tls
    ) as plane:
        token = tokens(plane).issue("reviews", {"version": "v1"}, any_address=True)
        credentials = trusting(plane) if tls else None
        rogue = sidecar_node(reviews(ip="not-an-ip.invalid"))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with AdsClient(plane.ads.address, rogue, credentials, token) as client:
                await client.fetch(CDS)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert count(plane, "bad_node") == 1
        ratings = reviews(service="ratings", ip="127.0.0.1")
        ratings_token = tokens(plane).issue("ratings", {"version": "v1"})
        node = sidecar_node(ratings)
        async with AdsClient(plane.ads.address, node, credentials, ratings_token) as client:
            response = await client.fetch(EDS, [outbound_cluster("ratings", 9081)])
        assert "not-an-ip" not in str(response)


async def test_one_token_joins_only_so_many_sidecars_at_once(tmp_path: Path) -> None:
    """A leaked token cannot flood a service with endpoints: the excess is RESOURCE_EXHAUSTED,
    and a slot frees when a sidecar leaves."""
    limits = JoinLimits(per_token=2)
    async with running_control_plane(
        tmp_path, MESH, state_dir=tmp_path / "state", tls=True, join_limits=limits
    ) as plane:
        token = tokens(plane).issue("reviews", {"version": "v1"}, any_address=True)
        first, second, third = (reviews(ip=f"127.0.0.{n}") for n in (2, 3, 4))
        async with (
            AdsClient(plane.ads.address, sidecar_node(first), trusting(plane), token) as one,
            AdsClient(plane.ads.address, sidecar_node(second), trusting(plane), token) as two,
        ):
            await one.fetch(CDS)
            await two.fetch(CDS)
            assert await refused(plane, third, token) == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert count(plane, "token_instances") == 1
        await wait_for_async(lambda: not plane.cache.watches, message="both gone")
        await join(plane, third, token)


def test_a_service_joins_only_so_many_sidecars_at_once() -> None:
    limits = JoinLimits(per_service=1)
    authority = TokenAuthority(
        Ed25519PrivateKey.generate(), "demo", "sha256:" + "0" * 64, Path("/nonexistent/revoked")
    )
    grant = authority.verify(authority.issue("reviews"))
    other = authority.verify(authority.issue("reviews"))
    leave = limits.join(grant)
    with pytest.raises(Refused) as raised:
        limits.join(other)
    assert raised.value.reason == "service_instances"
    leave()
    limits.join(other)
