"""Routes that match the caller (`match.from`, Istio's sourceLabels) in real Envoys: each
caller's sidecar holds the routes that apply to it, so two callers reaching the same
destination get different versions by rule, and a caller's labels choose as its service does."""

from __future__ import annotations

from harness.mesh import Instance, MeshEnv
from meshes import block, live_edit, version
from test_live_update import served_by

MESH = f"""\
mesh: e2e
services:
  productpage: {{port: 9080}}
  ratings: {{port: 9080}}
  reviews:
    port: 9080
{
    block(
        '''
subsets: {v1: {version: v1}, v2: {version: v2}}
routes:
  - name: productpage-to-v2
    match: {from: {service: productpage}}
    to: [{subset: v2}]
  - name: canaries-to-v2
    match: {from: {service: ratings, labels: {track: canary}}}
    to: [{subset: v2}]
  - name: everyone-else
    to: [{subset: v1}]
''',
        4,
    )
}
"""


def start_callers(env: MeshEnv, mesh: str) -> dict[str, Instance]:
    """Control plane, reviews v1 and v2, and three callers: productpage, ratings and a ratings
    instance labelled `track: canary`, each with both reviews instances as endpoints."""
    env.start_control_plane(env.write_mesh(mesh))
    callers = {
        "productpage": env.start_instance("productpage", "v1"),
        "ratings": env.start_instance("ratings", "v1"),
        "canary": env.start_instance("ratings", "v1", labels=["track=canary"]),
    }
    v1 = env.start_instance("reviews", "v1")
    v2 = env.start_instance("reviews", "v2")
    for caller in callers.values():
        caller.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
        caller.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])
    return callers


def versions_seen(callers: dict[str, Instance]) -> dict[str, set[str]]:
    """The versions that answered ten requests from each caller."""
    answered = {}
    for name, caller in callers.items():
        with caller.client() as client:
            answered[name] = {version(client, "/") for _ in range(10)}
    return answered


def test_two_callers_of_one_destination_get_different_versions(mesh_env: MeshEnv) -> None:
    callers = start_callers(mesh_env, MESH)
    ratings = callers["ratings"]
    assert versions_seen(callers) == {"productpage": {"v2"}, "ratings": {"v1"}, "canary": {"v2"}}
    table = ratings.admin.route_configs()["outbound|reviews"]
    (host,) = [h for h in table["virtual_hosts"] if h["name"] == "reviews"]
    assert [r["name"] for r in host["routes"]] == ["reviews/everyone-else"]


def test_a_saved_change_of_caller_moves_each_callers_traffic_live(mesh_env: MeshEnv) -> None:
    callers = start_callers(mesh_env, MESH)
    moved = MESH.replace("{from: {service: productpage}}", "{from: {service: ratings}}")
    load, saved, _ = live_edit(mesh_env, callers["productpage"], moved, served_by("v1"), 1)
    assert all(served_by("v2")(r) for r in load.results if r.sent_at < saved)
    assert versions_seen(callers) == {"productpage": {"v1"}, "ratings": {"v2"}, "canary": {"v2"}}
