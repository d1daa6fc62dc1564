"""Instances join their service's endpoints when their sidecar connects and leave when it stops."""

from __future__ import annotations

from harness.mesh import MeshEnv
from harness.wait import wait_for
from meshes import reviews_mesh, start_reviews_mesh

V1_CLUSTER = "outbound|9080|v1|reviews"


def test_a_stopped_sidecar_leaves_proxies_and_endpoints(mesh_env: MeshEnv) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0))
    control_plane = mesh_env.control_plane
    assert control_plane is not None
    extra = mesh_env.start_instance("reviews", "v1")
    page.admin.wait_hosts(V1_CLUSTER, [v1.inbound, extra.inbound])
    with page.client() as client:
        answered_by = {client.get("reviews").json()["ip"] for _ in range(20)}
    assert answered_by == {v1.ip, extra.ip}

    mesh_env.stop_instance(extra)
    wait_for(
        lambda: extra.node_id not in {p["node_id"] for p in control_plane.proxies()},
        5,
        message=f"{extra.node_id} to leave /proxies",
    )
    page.admin.wait_hosts(V1_CLUSTER, [v1.inbound])
    dump = control_plane.config_dump(page.node_id)
    eds = dump["type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"]
    v1_assignment = next(r for r in eds["resources"] if r["clusterName"] == V1_CLUSTER)
    members = [
        e["endpoint"]["address"]["socketAddress"]
        for e in v1_assignment["endpoints"][0]["lbEndpoints"]
    ]
    assert [m["address"] for m in members] == [v1.ip]
