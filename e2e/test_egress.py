"""`egress:` scopes what a sidecar receives to the services it calls (like Istio's Sidecar)."""

from __future__ import annotations

from harness.mesh import MeshEnv

MESH = """
mesh: egress
services:
  frontend: {port: 8080, egress: [reviews]}
  reviews: {port: 9080}
  ratings: {port: 9081}
"""


def test_a_scoped_sidecar_reaches_only_its_egress_services(mesh_env: MeshEnv) -> None:
    mesh_env.start_control_plane(mesh_env.write_mesh(MESH))
    frontend = mesh_env.start_instance("frontend", "v1")
    reviews = mesh_env.start_instance("reviews", "v1")
    mesh_env.start_instance("ratings", "v1")
    frontend.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])
    with frontend.client() as client:
        assert client.get("reviews").status == 200
        assert client.get("ratings").status == 404  # not in its egress: unknown here
    clusters = frontend.admin.dynamic_clusters()
    assert "outbound|9081||ratings" not in clusters and "outbound|9080||reviews" in clusters
