"""Mesh files shared by e2e tests: a caller (productpage) and a service in two versions."""

from __future__ import annotations

from harness.mesh import Instance, MeshEnv


def reviews_mesh(v1: int, v2: int, extra_routes: str = "") -> str:
    return f"""
        mesh: e2e
        services:
          productpage:
            port: 9080
          reviews:
            port: 9080
            subsets:
              v1: {{version: v1}}
              v2: {{version: v2}}
            routes:{extra_routes}
              - name: split
                to: [{{subset: v1, weight: {v1}}}, {{subset: v2, weight: {v2}}}]
        """


def start_reviews_mesh(env: MeshEnv, mesh_text: str) -> tuple[Instance, Instance, Instance]:
    """Control plane, a productpage caller and reviews v1 and v2; returns once the caller's
    sidecar has both reviews instances as endpoints of their subsets."""
    env.start_control_plane(env.write_mesh(mesh_text))
    page = env.start_instance("productpage", "v1")
    v1 = env.start_instance("reviews", "v1")
    v2 = env.start_instance("reviews", "v2")
    page.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
    page.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])
    return page, v1, v2
