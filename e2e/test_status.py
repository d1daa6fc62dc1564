"""`meshpilot status` shows a real NACK: which proxy, which type, and the proxy's error text."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support (not shipped)

from harness.mesh import MESHPILOT, ControlPlane, MeshEnv
from harness.wait import wait_for
from meshes import reviews_mesh

from meshpilot.model import proxies
from meshpilot.xds.types import CLUSTER
from tests.support.client import AdsClient, DeltaClient, sidecar_node

HEADER = ["SERVICE", "IP", "NODE", "XDS", "CDS", "EDS", "LDS", "SRDS", "RDS", "AGE", "ERROR"]
NACK_ERROR = "e2e-test: cluster 'outbound|9080||reviews' rejected on purpose (code 42)"


def run_status(control_plane: ControlPlane) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MESHPILOT, "status", "--admin", control_plane.admin],
        capture_output=True,
        text=True,
        timeout=30,
    )


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The header's column names and the rows by NODE, each cell cut at its column's start
    (cells are left-aligned under their header, and ERROR may contain spaces)."""
    header, *lines = text.splitlines()
    columns = [(m.group(), m.start()) for m in re.finditer(r"\S+", header)]
    rows = {}
    for line in lines:
        cells = {
            name: line[start : columns[i + 1][1] if i + 1 < len(columns) else None].strip()
            for i, (name, start) in enumerate(columns)
        }
        rows[cells["NODE"]] = cells
    return [name for name, _ in columns], rows


def statuses(control_plane: ControlPlane) -> dict[str, dict[str, str]]:
    """node id -> type URL -> status, from /proxies."""
    return {
        p["node_id"]: {t: s["status"] for t, s in p["types"].items()}
        for p in control_plane.proxies()
    }


async def nacked_clusters(client: AdsClient) -> discovery_pb2.DiscoveryResponse:
    """Ask for clusters and reject them (`NACK_ERROR`), over the client's protocol."""
    if isinstance(client, DeltaClient):
        client.request(CLUSTER)
        delta = await client.receive_delta()
        assert delta.type_url == CLUSTER and delta.system_version_info
        client.nack_delta(delta, NACK_ERROR)
        return discovery_pb2.DiscoveryResponse(version_info=delta.system_version_info)
    client.send(CLUSTER)
    cds = await client.receive()
    assert cds.type_url == CLUSTER and cds.version_info
    client.nack(cds, NACK_ERROR)
    return cds


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_status_shows_a_proxy_that_nacked_with_its_error(
    mesh_env: MeshEnv, protocol: str
) -> None:
    control_plane = mesh_env.start_control_plane(mesh_env.write_mesh(reviews_mesh(100, 0)))
    reviews = mesh_env.start_instance("reviews", "v1")
    control_plane.wait_synced([reviews.node_id])
    ip = mesh_env.ips.ip()
    fake = proxies.Proxy(f"productpage~{ip}", "productpage", ip, 8080, (("version", "v1"),))

    token = mesh_env.token("productpage", {"version": "v1"}, any_address=True)
    credentials = grpc.ssl_channel_credentials(mesh_env.trust_anchor())
    client_class = DeltaClient if protocol == "delta" else AdsClient
    async with client_class(control_plane.xds, sidecar_node(fake), credentials, token) as client:
        cds = await nacked_clusters(client)

        def nacked_and_envoy_synced() -> bool:
            # The fake instance joined productpage, so the real Envoy gets new endpoints first.
            seen = statuses(control_plane)
            return seen.get(fake.node_id, {}).get(CLUSTER) == "NACKED" and all(
                s == "SYNCED" for s in seen.get(reviews.node_id, {"": ""}).values()
            )

        await asyncio.to_thread(
            wait_for, nacked_and_envoy_synced, 10, message="the NACK", ignore=(OSError,)
        )
        shown = await asyncio.to_thread(run_status, control_plane)
        proxy = await asyncio.to_thread(control_plane.proxy, fake.node_id)

    assert proxy is not None
    assert proxy["types"][CLUSTER]["error"] == NACK_ERROR
    assert proxy["types"][CLUSTER]["nacked_version"] == cds.version_info
    assert shown.returncode == 1, shown
    columns, rows = parse_table(shown.stdout)
    assert columns == HEADER, shown.stdout
    assert sorted(rows) == sorted([fake.node_id, reviews.node_id]), shown.stdout
    nacker = rows[fake.node_id]
    assert (nacker["SERVICE"], nacker["IP"], nacker["XDS"]) == ("productpage", ip, protocol)
    assert nacker["CDS"].split()[0] == "NACKED", shown.stdout
    assert NACK_ERROR in nacker["ERROR"], shown.stdout
    envoy = rows[reviews.node_id]
    assert (envoy["SERVICE"], envoy["IP"]) == ("reviews", reviews.ip)
    assert [envoy[t].split()[0] for t in ("CDS", "EDS", "LDS", "SRDS", "RDS")] == ["SYNCED"] * 5
    assert envoy["ERROR"] == "", shown.stdout
    assert 'meshpilot_nacks_total{type="cds"} 1.0' in control_plane.metrics().splitlines()

    # The NACKing client is gone: only the real, synced proxy is left, and status says so.
    def status_ok() -> subprocess.CompletedProcess[str] | None:
        result = run_status(control_plane)
        return result if result.returncode == 0 else None

    healthy = wait_for(status_ok, 10, interval=0.1, message="`meshpilot status` to exit 0")
    columns, rows = parse_table(healthy.stdout)
    assert columns == HEADER, healthy.stdout
    assert list(rows) == [reviews.node_id], healthy.stdout


def test_status_shows_a_rejected_save_above_the_proxies_which_keep_their_state(
    mesh_env: MeshEnv,
) -> None:
    mesh = mesh_env.write_mesh(reviews_mesh(100, 0))
    control_plane = mesh_env.start_control_plane(mesh)
    reviews = mesh_env.start_instance("reviews", "v1")
    control_plane.wait_synced([reviews.node_id])
    serving = control_plane.mesh()["version"]

    mesh_env.write_mesh(reviews_mesh(50, 20))
    wait_for(lambda: control_plane.mesh()["problems"], 10, message="the rejected save")
    shown = run_status(control_plane)

    assert shown.returncode == 0, shown  # the proxies are as they were: SYNCED
    told, table = shown.stdout.split("\n\n", 1)
    assert told.splitlines() == [
        f"the last save of the mesh file was rejected; version {serving} keeps serving:",
        f"  {mesh}:12:13: services.reviews.routes[0].to: weights add up to 70; they must add "
        "up to 100",
    ], shown.stdout
    columns, rows = parse_table(table)
    assert columns == HEADER, shown.stdout
    assert [rows[reviews.node_id][t].split()[0] for t in HEADER[4:9]] == ["SYNCED"] * 5
