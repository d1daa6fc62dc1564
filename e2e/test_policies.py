"""Static policies, enforced by the destination's Envoy (RBAC), with sidecar-stamped identity."""

from __future__ import annotations

import http.client

from harness.mesh import Instance, MeshEnv

MESH = """
mesh: policies
services:
  frontend: {port: 8080}
  other: {port: 8080}
  reviews: {port: 9080}
policies:
  - name: only-frontend-reads-reviews
    service: reviews
    action: allow
    from: [frontend]
  - name: no-admin
    service: reviews
    action: deny
    to: {paths: [/admin*]}
  - name: watch-frontend
    service: reviews
    action: audit
    from: [frontend]
    to: {methods: [GET]}
"""


def start(mesh_env: MeshEnv) -> tuple[Instance, Instance, Instance]:
    mesh_env.start_control_plane(mesh_env.write_mesh(MESH))
    frontend = mesh_env.start_instance("frontend", "v1")
    other = mesh_env.start_instance("other", "v1")
    reviews = mesh_env.start_instance("reviews", "v1")
    for caller in (frontend, other):
        caller.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])
    return frontend, other, reviews


def test_allowed_and_denied_callers_deny_by_path_and_audit(mesh_env: MeshEnv) -> None:
    frontend, other, reviews = start(mesh_env)
    with frontend.client() as client:
        allowed = client.get("reviews", "/reviews/1")
        admin = client.get("reviews", "/admin/users")
        for _ in range(4):
            client.get("reviews", "/reviews/2")
    with other.client() as client:
        denied = client.get("reviews", "/reviews/1")
        spoofed = client.get("reviews", "/reviews/1", **{"x-mesh-source": "frontend"})
    assert allowed.status == 200
    assert allowed.json()["headers"]["x-mesh-source"] == "frontend"  # the sidecar says who calls
    assert admin.status == 403  # deny wins over allow
    assert denied.status == 403
    assert spoofed.status == 403  # the caller's sidecar overwrites what its app claims
    assert reviews.admin.stat("http.inbound.rbac.audit.shadow_allowed") == 6  # audits see all


def test_a_request_sent_straight_to_an_inbound_port_has_no_source(mesh_env: MeshEnv) -> None:
    _, _, reviews = start(mesh_env)
    connection = http.client.HTTPConnection(reviews.ip, 15006, timeout=5)
    connection.request("GET", "/reviews/1", headers={"Host": "reviews"})
    assert connection.getresponse().status == 403  # an allow policy exists, no source matches it
    connection.close()
