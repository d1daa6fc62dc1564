"""Static policies, enforced by the destination's Envoy (RBAC), callers known by the workload
certificate their sidecar presents (mTLS), never by a header (issue #12's forged-header attack)."""

from __future__ import annotations

import http.client

import pytest
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


def start(mesh_env: MeshEnv, mesh: str = MESH) -> tuple[Instance, Instance, Instance]:
    mesh_env.start_control_plane(mesh_env.write_mesh(mesh))
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
        forged = client.get("reviews", "/reviews/1", **{"x-mesh-source": "someone-else"})
    with other.client() as client:
        denied = client.get("reviews", "/reviews/1")
        spoofed = client.get("reviews", "/reviews/1", **{"x-mesh-source": "frontend"})
    assert allowed.status == 200
    assert forged.status == 200 and "x-mesh-source" not in forged.json()["headers"]  # stripped
    assert admin.status == 403  # deny wins over allow
    assert denied.status == 403
    assert spoofed.status == 403  # a header names no one: the certificate says who calls
    assert reviews.admin.stat("http.inbound.rbac.audit.shadow_allowed") == 7  # audits see all


def straight_to_inbound(instance: Instance, **headers: str) -> int:
    """A plaintext request sent to an instance's inbound port, not through a sidecar."""
    connection = http.client.HTTPConnection(instance.ip, 15006, timeout=5)
    try:
        connection.request("GET", "/reviews/1", headers={"Host": "reviews", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


def test_strict_mtls_refuses_a_plaintext_request_to_an_inbound_port(mesh_env: MeshEnv) -> None:
    _, _, reviews = start(mesh_env)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        straight_to_inbound(reviews, **{"x-mesh-source": "frontend"})


def test_in_permissive_mode_a_forged_header_grants_nothing(mesh_env: MeshEnv) -> None:
    _, _, reviews = start(mesh_env, MESH + "security: {mtls: permissive}\n")
    assert straight_to_inbound(reviews, **{"x-mesh-source": "frontend"}) == 403
