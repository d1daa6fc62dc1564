"""Any sequence of discovery requests, however wrong (unknown types, stale or invented nonces and
versions, NACKs of nothing, names that do not exist), leaves the ADS server consistent and
responsive: a well-behaved sidecar is still served, and the misbehaving stream's state is
cleaned up when it ends. In-process, real gRPC (issue #13 item 7)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshpilot.controlplane import ControlPlane
from meshpilot.model.names import outbound_cluster
from meshpilot.model.proxies import Proxy
from meshpilot.xds.types import BY_SHORT, TYPES
from tests.support.client import AdsClient, sidecar_node
from tests.support.controlplane import running_control_plane
from tests.support.wait import wait_for_async

MESH = """\
mesh: fuzz
services:
  reviews: {port: 9080, subsets: {v1: {version: v1}}}
  ratings: {port: 9081}
"""
URLS = [t.url for t in TYPES] + ["type.googleapis.com/bogus.Type", ""]
NAMES = [
    outbound_cluster("reviews", 9080),
    outbound_cluster("reviews", 9080, "v1"),
    "outbound|reviews",
]
STATUSES = {"SYNCED", "STALE", "NACKED", "NOT_SENT"}


@dataclass(frozen=True)
class Step:
    """One request: which type, names, version and nonce (echoed from the last response, or
    invented), an error detail or not; then whether to read a response."""

    type_url: str
    names: tuple[str, ...]
    version: str
    nonce: str
    error: str | None
    read: bool


steps = st.lists(
    st.builds(
        Step,
        type_url=st.sampled_from(URLS),
        names=st.lists(st.sampled_from([*NAMES, "nope", "x" * 300]), max_size=3).map(tuple),
        version=st.sampled_from(["", "LAST", "stale-version"]),
        nonce=st.sampled_from(["", "LAST", "invented-nonce"]),
        error=st.none() | st.sampled_from(["rejected", ""]),
        read=st.booleans(),
    ),
    min_size=1,
    max_size=10,
)


async def misbehave(plane: ControlPlane, sequence: list[Step], node_id: str) -> None:
    proxy = Proxy(node_id, "reviews", "127.0.0.1", 8080, (("version", "v1"),))
    last_version, last_nonce = "", ""
    with contextlib.suppress(grpc.aio.AioRpcError, ConnectionError, TimeoutError):
        async with AdsClient(plane.ads.address, sidecar_node(proxy)) as client:
            for step in sequence:
                client.send(
                    step.type_url,
                    step.names,
                    last_version if step.version == "LAST" else step.version,
                    last_nonce if step.nonce == "LAST" else step.nonce,
                    step.error,
                )
                if step.read:
                    response = await client.receive(timeout=0.3)
                    last_version, last_nonce = response.version_info, response.nonce
            for state in plane.cache.watches:
                assert {s.status.value for s in state.types.values()} <= STATUSES


async def well_behaved(plane: ControlPlane) -> None:
    proxy = Proxy("ratings~127.0.0.1", "ratings", "127.0.0.1", 8080, ())
    async with AdsClient(plane.ads.address, sidecar_node(proxy)) as client:
        response = await client.fetch(BY_SHORT["cds"].url)
    assert response.resources


@given(sequences=st.lists(steps, min_size=1, max_size=3))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_request_sequence_leaves_the_server_consistent_and_responsive(
    sequences: list[list[Step]],
) -> None:
    async def exercise() -> None:
        with tempfile.TemporaryDirectory() as directory:
            async with running_control_plane(Path(directory), MESH) as plane:
                for n, sequence in enumerate(sequences):
                    await misbehave(plane, sequence, f"reviews~fuzz-{n}")
                await well_behaved(plane)
                await wait_for_async(lambda: not plane.cache.watches, 5, message="no leak")

    asyncio.run(exercise())
