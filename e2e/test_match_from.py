"""Routes that match the caller (`match.from`, Istio's sourceLabels) in real Envoys: each
caller's sidecar holds the routes that apply to it, so two callers reaching the same
destination get different versions by rule, and a caller's labels choose as its service does."""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import block, version

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


def test_two_callers_of_one_destination_get_different_versions(mesh_env: MeshEnv) -> None:
    mesh_env.start_control_plane(mesh_env.write_mesh(MESH))
    page = mesh_env.start_instance("productpage", "v1")
    ratings = mesh_env.start_instance("ratings", "v1")
    canary = mesh_env.start_instance("ratings", "v1", labels=["track=canary"])
    v1 = mesh_env.start_instance("reviews", "v1")
    v2 = mesh_env.start_instance("reviews", "v2")
    for caller in (page, ratings, canary):
        caller.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
        caller.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])
    answered = {}
    for name, caller in (("productpage", page), ("ratings", ratings), ("canary", canary)):
        with caller.client() as client:
            answered[name] = {version(client, "/") for _ in range(10)}
    assert answered == {"productpage": {"v2"}, "ratings": {"v1"}, "canary": {"v2"}}
    table = ratings.admin.route_configs()["outbound|reviews"]
    (host,) = [h for h in table["virtual_hosts"] if h["name"] == "reviews"]
    assert [r["name"] for r in host["routes"]] == ["reviews/everyone-else"]
