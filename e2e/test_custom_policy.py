"""Custom policies: the destination's Envoy asks the mixer, which runs a Python hook."""

from __future__ import annotations

from harness.mesh import Instance, MeshEnv, Mixer
from harness.wait import wait_for

HOOK = """from meshpilot.policy import Decision

def check(request):
    if request.headers.get("x-user") == "mallory":
        return Decision(False, status=451, body="no mallory")
    return Decision(True, headers={"x-quota-checked": request.source or "none"})
"""
DENY_ALL = "def check(request):\n    return False\n"
MESH = """
mesh: custom
mixer: {failure_mode: FAILURE_MODE, timeout: 1s}
services:
  frontend: {port: 8080}
  ratings: {port: 9080}
policies:
  - name: ratings-quota
    service: ratings
    action: custom
    from: [frontend]
    to: {paths: [/ratings/*]}
    hook: hooks/quota.py:check
  - name: no-admin
    service: ratings
    action: deny
    to: {paths: [/admin*]}
"""


def mesh_text(failure_mode: str = "closed") -> str:
    return MESH.replace("FAILURE_MODE", failure_mode)


def start(mesh_env: MeshEnv) -> tuple[Instance, Mixer]:
    (mesh_env.tmp / "hooks").mkdir()
    (mesh_env.tmp / "hooks" / "quota.py").write_text(HOOK)
    mesh = mesh_env.write_mesh(mesh_text())
    _, mixer = mesh_env.start_with_mixer(mesh)
    frontend = mesh_env.start_instance("frontend", "v1")
    ratings = mesh_env.start_instance("ratings", "v1")
    frontend.admin.wait_hosts("outbound|9080||ratings", [ratings.inbound])
    return frontend, mixer


def test_a_hook_allows_denies_and_adds_headers_and_unmatched_requests_skip_it(
    mesh_env: MeshEnv,
) -> None:
    frontend, _ = start(mesh_env)
    with frontend.client() as client:
        ann = client.get("ratings", "/ratings/1", **{"x-user": "ann", "x-mesh-source": "other"})
        mallory = client.get("ratings", "/ratings/1", **{"x-user": "mallory"})
        unmatched = client.get("ratings", "/reviews/1", **{"x-user": "mallory"})
    assert ann.status == 200
    # Added by the hook's Decision: the source it saw is the caller's certificate, not a header.
    assert ann.json()["headers"]["x-quota-checked"] == "frontend"
    assert (mallory.status, mallory.text) == (451, "no mallory")
    assert unmatched.status == 200 and "x-quota-checked" not in unmatched.json()["headers"]


def test_an_edited_hook_is_reloaded(mesh_env: MeshEnv) -> None:
    frontend, _ = start(mesh_env)
    with frontend.client() as client:
        assert client.get("ratings", "/ratings/1").status == 200
        (mesh_env.tmp / "hooks" / "quota.py").write_text(DENY_ALL)
        wait_for(
            lambda: client.get("ratings", "/ratings/1").status == 403,
            10,
            message="the edited hook to deny",
        )


def test_with_the_mixer_down_static_policies_hold_and_custom_ones_fail_closed_or_open(
    mesh_env: MeshEnv,
) -> None:
    frontend, mixer = start(mesh_env)
    assert mixer.proc is not None
    mesh_env.processes.kill(mixer.proc)
    with frontend.client() as client:
        assert client.get("ratings", "/ratings/1").status == 403  # fail closed
        assert client.get("ratings", "/admin/x").status == 403  # static: Envoy alone
        assert client.get("ratings", "/reviews/1").status == 200  # no custom policy matches
        mesh_env.write_mesh(mesh_text("open"))
        wait_for(
            lambda: client.get("ratings", "/ratings/1").status == 200,
            10,
            message="failure_mode open to let requests through",
        )
        assert client.get("ratings", "/admin/x").status == 403


def test_checks_spread_over_several_connections_to_the_mixer(mesh_env: MeshEnv) -> None:
    """The mixer's workers share its port, and the kernel spreads connections, not calls: so a
    sidecar keeps several connections to the mixer and sends each check over the least busy."""
    frontend, _ = start(mesh_env)
    ratings = next(i for i in mesh_env.instances if i.service == "ratings")
    with frontend.client() as client:
        statuses = [client.get("ratings", f"/ratings/{n}").status for n in range(20)]
    assert statuses == [200] * 20
    assert ratings.admin.stat("cluster.mixer.upstream_rq_total") >= 20
    assert ratings.admin.stat("cluster.mixer.upstream_cx_total") >= 2
