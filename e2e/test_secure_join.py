"""A sidecar joins a secure control plane the way an operator would do it (issue #12): the token
comes from the `meshpilot token` command, not from the harness's library call, and the sidecar
reaches the control plane over TLS, is LIVE and holds its service's certificate."""

from __future__ import annotations

import subprocess

from harness.envoy_admin import EnvoyAdmin
from harness.mesh import MESHPILOT, MeshEnv
from harness.wait import http_json, wait_envoy_live, wait_for
from meshes import caller_mesh

MESH = caller_mesh("reviews: {port: 9080}")


def cli_token(mesh_env: MeshEnv, service: str, *labels: str) -> str:
    """A join token as `meshpilot token` prints it."""
    argv = [MESHPILOT, "token", "--state-dir", str(mesh_env.state_dir), "--service", service]
    for label in labels:
        argv += ["--label", label]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def presented_spiffe_ids(admin_url: str) -> list[str]:
    """The URI SANs Envoy's admin `/certs` lists, once per listener or cluster using the secret."""
    return [
        san["uri"]
        for entry in http_json(f"{admin_url}/certs")["certificates"]
        for certificate in entry.get("cert_chain", [])
        for san in certificate.get("subject_alt_names", [])
        if "uri" in san
    ]


def test_a_sidecar_joins_over_tls_with_a_token_from_the_cli(mesh_env: MeshEnv) -> None:
    control_plane = mesh_env.start_control_plane(mesh_env.write_mesh(MESH))
    ip = mesh_env.ips.ip()
    token = cli_token(mesh_env, "reviews", "version=v1")
    sidecar = mesh_env.start_sidecar("reviews", "v1", ip, token=token)
    admin = EnvoyAdmin(f"http://{ip}:15000")
    wait_envoy_live(admin.url, 20, procs=[sidecar])
    control_plane.wait_synced([f"reviews~{ip}"])
    assert control_plane.proxy(f"reviews~{ip}") is not None
    assert admin.stat("cluster.xds_cluster.ssl.handshake") >= 1  # ADS runs over TLS
    wait_for(
        lambda: set(presented_spiffe_ids(admin.url)) == {"spiffe://e2e/service/reviews"},
        10,
        message="Envoy to hold the workload certificate from its agent",
    )
