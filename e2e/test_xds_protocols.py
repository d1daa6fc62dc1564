"""Incremental (delta, the default) and state-of-the-world xDS side by side: real Envoy
sidecars of both kinds in one mesh get the same live edits and membership changes."""

from __future__ import annotations

from harness.client import LoadGenerator
from harness.mesh import MeshEnv
from meshes import CALLER, block, reviews_mesh
from test_live_update import served_by


def test_delta_and_state_of_the_world_sidecars_follow_the_same_edits(mesh_env: MeshEnv) -> None:
    control_plane = mesh_env.start_control_plane(mesh_env.write_mesh(reviews_mesh(100, 0)))
    delta = mesh_env.start_instance(CALLER, "v1")
    sotw = mesh_env.start_instance(CALLER, "v1", xds_protocol="sotw")
    v1 = mesh_env.start_instance("reviews", "v1")
    protocols = {p["node_id"]: p["protocol"] for p in control_plane.proxies()}
    assert protocols[delta.node_id] == "delta" and protocols[sotw.node_id] == "sotw"
    assert delta.admin.stat("control_plane.connected_state") == 1

    v2 = mesh_env.start_instance("reviews", "v2")  # membership: both learn the new endpoint
    for caller in (delta, sotw):
        caller.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
        caller.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])
    mesh_env.write_mesh(reviews_mesh(0, 100))  # a live edit: both move to v2
    for caller in (delta, sotw):
        with LoadGenerator(caller.client(), "reviews") as load:
            load.wait_effective(served_by("v2"))
        assert load.failures() == [], load.summary()
    control_plane.wait_synced([delta.node_id, sotw.node_id])
    mesh_env.stop_instance(v1)  # v1 leaves: removed from both
    for caller in (delta, sotw):
        caller.admin.wait_hosts("outbound|9080|v1|reviews", [])


def test_an_edit_of_one_service_reloads_only_its_route_table(mesh_env: MeshEnv) -> None:
    """Each called service has a route table of its own (chosen by Host through a route scope),
    so an edit of reviews' routes sends a delta sidecar reviews' table alone."""
    ratings = "ratings:\n  port: 9080\n"
    control_plane = mesh_env.start_control_plane(
        mesh_env.write_mesh(reviews_mesh(100, 0) + block(ratings, 2))
    )
    caller = mesh_env.start_instance(CALLER, "v1")
    mesh_env.start_instance("reviews", "v1")
    v2 = mesh_env.start_instance("reviews", "v2")
    control_plane.wait_synced([caller.node_id])

    def updates(service: str) -> int:
        return caller.admin.stat(f"http.outbound.rds.outbound|{service}.update_success")

    before = {service: updates(service) for service in ("reviews", "ratings")}
    assert min(before.values()) >= 1
    mesh_env.write_mesh(reviews_mesh(0, 100) + block(ratings, 2))
    with LoadGenerator(caller.client(), "reviews") as load:
        load.wait_effective(served_by("v2"))
    assert load.failures() == [], load.summary()
    control_plane.wait_synced([caller.node_id, v2.node_id])
    assert updates("reviews") == before["reviews"] + 1
    assert updates("ratings") == before["ratings"]  # not sent: unchanged
    assert caller.admin.stat("http.outbound.scoped_rds.outbound.active_scopes") == 3
