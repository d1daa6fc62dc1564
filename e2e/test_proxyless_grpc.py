"""A proxyless gRPC client (gRPC's own xDS client, no sidecar) calls a mesh service through
meshpilot: API listener -> route table -> clusters -> endpoints, with the mesh's weighted split,
into the server's sidecar and on to the app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.mesh import MESHPILOT, MeshEnv
from harness.stats import binomial_bounds
from harness.wait import wait_for
from meshes import block, caller_mesh
from test_grpc import grpc_app

from meshpilot.xds.types import SCOPED_ROUTE

CLIENT = str(Path(__file__).resolve().parent / "grpc_xds_client.py")
CALLS = 500
V2_SHARE = 0.2
MESH = caller_mesh(
    block("""
    greeter:
      port: 50051
      protocol: grpc
      subsets:
        v1: {version: v1}
        v2: {version: v2}
      routes:
        - name: canary
          to: [{subset: v1, weight: 80}, {subset: v2, weight: 20}]
    """),
    caller="client",
)


def test_a_proxyless_grpc_client_follows_the_weighted_split(mesh_env: MeshEnv) -> None:
    control_plane = mesh_env.start_control_plane(mesh_env.write_mesh(MESH), insecure=True)
    servers = [
        mesh_env.start_command_instance("greeter", v, grpc_app("greeter", v)) for v in ("v1", "v2")
    ]
    client_ip = mesh_env.ips.ip()
    bootstrap = mesh_env.tmp / "grpc-bootstrap.json"
    subprocess.run(
        [
            *(MESHPILOT, "bootstrap", "--proxyless", "--service", "client"),
            *("--ip", client_ip, "--xds", control_plane.xds, "-o", str(bootstrap)),
        ],
        check=True,
    )
    node_id = json.loads(bootstrap.read_text())["node"]["id"]
    out = mesh_env.tmp / "replies.json"
    argv = [sys.executable, CLIENT, "--target", "xds:///greeter:50051"]
    client = mesh_env.processes.start(
        "proxyless-client",
        [*argv, "--calls", str(CALLS), "--out", str(out)],
        env={"GRPC_XDS_BOOTSTRAP": str(bootstrap)},
    )
    wait_for(out.exists, 60.0, message="the client's replies", procs=[client])
    result = json.loads(out.read_text())
    assert result["errors"] == [], result["errors"][:5]
    replies = result["replies"]
    assert len(replies) == CALLS
    assert set(replies) <= {f"greeter:{v}:{n}" for v in ("v1", "v2") for n in range(CALLS)}
    to_v2 = sum(r.startswith("greeter:v2:") for r in replies)
    low, high = binomial_bounds(CALLS, V2_SHARE)
    assert low <= to_v2 <= high, (to_v2, low, high)

    control_plane.wait_synced([node_id, *(s.node_id for s in servers)])
    listed = control_plane.proxy(node_id)
    assert listed is not None and listed["proxyless"] is True
    assert {t["status"] for t in listed["types"].values()} == {"SYNCED"}, listed["types"]
    assert SCOPED_ROUTE not in listed["types"]  # routed by API listener: no route scopes
    # It asked for just what it calls, and is no endpoint of its service.
    sent = control_plane.config_dump(node_id)
    listeners = sent["type.googleapis.com/envoy.config.listener.v3.Listener"]["resources"]
    assert [r["name"] for r in listeners] == ["greeter:50051"]
    for server in servers:
        assert server.admin.clusters()["outbound|9080||client"] == []
