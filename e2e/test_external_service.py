"""A service with DNS-name endpoints reachable through the mesh, and TLS origination to it.

`localhost` is the DNS name: it resolves to 127.0.0.1 only, so the servers standing in for
external services listen there, on a free port (not on the test's own loopback block).
"""

from __future__ import annotations

import http.client
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from harness.mesh import Instance, MeshEnv
from harness.processes import Proc
from harness.wait import wait_for
from meshes import caller_mesh

from meshpilot.runner.addresses import free_port

TLS_APP = str(Path(__file__).resolve().parent / "tls_app.py")
LOCALHOST = "127.0.0.1"


def test_a_service_with_a_dns_name_endpoint_is_reachable_by_both_names(
    mesh_env: MeshEnv,
) -> None:
    port = free_port(LOCALHOST)
    mesh_env.start_app("external", None, LOCALHOST, port)
    page = start_page(mesh_env, [external("external", 80, "localhost", port)])
    cluster = page.admin.dynamic_clusters()["outbound|80||external"]
    assert cluster["type"] == "STRICT_DNS"
    page.admin.wait_hosts("outbound|80||external", [f"{LOCALHOST}:{port}"])

    with page.client() as client:
        replies = {
            host: client.get(host, "/")
            for host in ("external", "external:80", "localhost", f"localhost:{port}")
        }
    assert {host: r.status for host, r in replies.items()} == dict.fromkeys(replies, 200)
    assert {r.json()["ip"] for r in replies.values()} == {LOCALHOST}
    # The external server sees the name it is known by, however the app called it.
    assert {r.json()["headers"]["host"] for r in replies.values()} == {"localhost"}


def test_tls_origination_verifies_the_server_certificate(mesh_env: MeshEnv) -> None:
    """The app speaks plain HTTP to its sidecar, which speaks TLS to the server, trusting the
    mesh's `ca_file` and checking the certificate names the SNI."""
    tmp = mesh_env.tmp
    make_certificate(tmp / "server", "localhost")
    make_certificate(tmp / "other", "localhost")  # valid for the name, from an untrusted CA
    port = free_port(LOCALHOST)
    start_tls_app(mesh_env, port, tmp / "server.pem", tmp / "server.key")
    page = start_page(
        mesh_env,
        [
            external("secure", 443, "localhost", port, "{sni: localhost, ca_file: server.pem}"),
            external("wrong-ca", 443, LOCALHOST, port, "{sni: localhost, ca_file: other.pem}"),
            external(
                "wrong-name", 443, LOCALHOST, port, "{sni: api.example.com, ca_file: server.pem}"
            ),
            external("unverified", 443, LOCALHOST, port, "{verify: false}"),
        ],
    )
    page.admin.wait_hosts("outbound|443||secure", [f"{LOCALHOST}:{port}"])
    page.admin.wait_hosts("outbound|443||wrong-ca", [f"{LOCALHOST}:{port}"])

    with page.client() as client:
        status = {
            service: client.get(service, "/").status
            for service in ("secure", "wrong-ca", "wrong-name", "unverified")
        }
    assert status == {"secure": 200, "wrong-ca": 503, "wrong-name": 503, "unverified": 200}
    stat = page.admin.stat
    assert stat("cluster.outbound|443||secure.ssl.handshake") >= 1
    assert stat("cluster.outbound|443||wrong-ca.ssl.fail_verify_error") >= 1
    assert stat("cluster.outbound|443||wrong-name.ssl.fail_verify_san") >= 1


def external(name: str, port: int, address: str, address_port: int, tls: str = "") -> str:
    """An external service `name` on `port`, at `address`:`address_port` (TLS: `tls`)."""
    endpoints = f"[{{address: {address}, port: {address_port}}}]"
    return f"{name}: {{port: {port}, endpoints: {endpoints}{f', tls: {tls}' if tls else ''}}}"


def start_page(env: MeshEnv, services: list[str]) -> Instance:
    """The control plane of a mesh of `services` and their caller, productpage, once it is
    synced."""
    control_plane = env.start_control_plane(env.write_mesh(caller_mesh("\n".join(services))))
    page = env.start_instance("productpage", "v1")
    control_plane.wait_synced([page.node_id])
    return page


def make_certificate(stem: Path, name: str) -> None:
    """A self-signed certificate for DNS name `name`: `stem.pem` and its key `stem.key`."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make test certificates")
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    subject = ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
    files = ["-keyout", f"{stem}.key", "-out", f"{stem}.pem"]
    argv = [openssl, "req", "-x509", "-days", "2", *key, *subject, *files]
    subprocess.run(argv, check=True, capture_output=True)


def start_tls_app(env: MeshEnv, port: int, cert: Path, key: Path) -> Proc:
    """The test app behind TLS on 127.0.0.1:`port`, once it answers over HTTPS."""
    argv = [sys.executable, TLS_APP, "--ip", LOCALHOST, "--port", str(port)]
    proc = env.processes.start("tls-app", [*argv, "--cert", str(cert), "--key", str(key)])
    context = ssl.create_default_context(cafile=str(cert))

    def answers() -> bool:
        conn = http.client.HTTPSConnection("localhost", port, timeout=1.0, context=context)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        finally:
            conn.close()

    wait_for(answers, 10, message="the TLS app to answer", ignore=(OSError,), procs=[proc])
    return proc
