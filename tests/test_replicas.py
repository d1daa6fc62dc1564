"""Replicas on one store (in memory here; etcd in e2e/test_replicas.py): each serves every
replica's instances, and all of them send the same versions, so a sidecar that moves to another
replica is sent nothing new."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.controlplane import ControlPlane
from meshpilot.store import MemoryStore
from meshpilot.xds.cache import MEMBERSHIP_MAX_WAIT_S
from meshpilot.xds.sotw.state import SotwTypeState
from meshpilot.xds.types import ENDPOINT
from tests.ads_support import V1, V2, proxy
from tests.support.client import AdsClient, sidecar_node
from tests.support.controlplane import running_control_plane
from tests.support.wait import wait_for_async

MESH = """
mesh: replicas
services:
  reviews:
    port: 9080
    subsets: {v1: {version: v1}, v2: {version: v2}}
"""
REVIEWS = ["outbound|9080||reviews"]


@contextlib.asynccontextmanager
async def two_replicas(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, ControlPlane]]:
    """Two control planes on one store, each with its own copy of the same mesh file."""
    store = MemoryStore()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    async with (
        running_control_plane(tmp_path / "one", MESH, store=store) as one,
        running_control_plane(tmp_path / "two", MESH, store=store) as two,
    ):
        yield one, two


def addresses(response: discovery_pb2.DiscoveryResponse) -> set[str]:
    assignment = endpoint_pb2.ClusterLoadAssignment.FromString(response.resources[0].value)
    return {
        e.endpoint.address.socket_address.address
        for group in assignment.endpoints
        for e in group.lb_endpoints
    }


def join(client: AdsClient) -> AdsClient:
    """Open the client's stream (its instance joins) by asking for the reviews endpoints."""
    client.send(ENDPOINT, REVIEWS)
    return client


async def endpoints_once(client: AdsClient, wanted: set[str]) -> discovery_pb2.DiscoveryResponse:
    """ACK every EDS response of a joined client until one holds exactly `wanted`; that one."""
    while True:
        response = await client.receive()
        client.ack(response, REVIEWS)
        if addresses(response) == wanted:
            return response


def client(
    plane: ControlPlane, name: str, ip: str, labels: tuple[tuple[str, str], ...]
) -> AdsClient:
    return AdsClient(plane.ads.address, sidecar_node(proxy(name, ip, labels)))


async def test_every_replica_serves_every_instance_with_the_same_version(tmp_path: Path) -> None:
    async with (
        two_replicas(tmp_path) as (one, two),
        client(one, "a", "127.0.0.2", V1) as on_one,
        client(two, "b", "127.0.0.3", V2) as on_two,
    ):
        both = {"127.0.0.2", "127.0.0.3"}
        join(on_one)
        join(on_two)
        seen_on_one = await endpoints_once(on_one, both)
        seen_on_two = await endpoints_once(on_two, both)
    assert seen_on_one.version_info == seen_on_two.version_info
    assert seen_on_one.resources == seen_on_two.resources


async def test_a_sidecar_moving_to_another_replica_is_sent_nothing_new(tmp_path: Path) -> None:
    everyone = {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    async with (
        two_replicas(tmp_path) as (one, two),
        client(one, "a", "127.0.0.2", V1) as staying_on_one,
        client(two, "b", "127.0.0.3", V2) as staying_on_two,
    ):
        join(staying_on_one)
        join(staying_on_two)
        async with client(one, "m", "127.0.0.4", V1) as moving:
            had = await endpoints_once(join(moving), everyone)
        async with client(two, "m", "127.0.0.4", V1) as moved:
            moved.send(ENDPOINT, REVIEWS, version=had.version_info)
            node = "m~127.0.0.4"

            def settled() -> SotwTypeState | None:
                watch = next((w for w in two.cache.watches if w.proxy.node_id == node), None)
                state = watch.types[ENDPOINT] if watch is not None else None
                assert state is None or isinstance(state, SotwTypeState)
                return state if state is not None and state.acked_version else None

            state = await wait_for_async(settled, message="the moved sidecar's claim settled")
            assert state.acked_version == had.version_info
            assert state.nonce == ""  # settled by its claim: no response was sent
            with pytest.raises(TimeoutError):  # nor is one sent once membership settles
                await moved.receive(timeout=MEMBERSHIP_MAX_WAIT_S + 0.5)
