"""The ingress gateway: requests from outside the mesh enter at its address, go to services by
Host and path through their routes (splits included), are reported with the gateway's name as
their source, and policies admit or refuse them by that name; TLS at the edge from files."""

from __future__ import annotations

import http.client
import ssl
from collections import Counter
from pathlib import Path

from harness.mesh import MESHPILOT, MeshEnv
from harness.wait import wait_for
from meshes import block
from test_telemetry import requests_total
from test_up import RUN

from meshpilot.identity.ca import CertificateAuthority

PORT = 8000
ROUTES = 40


def gateway_mesh(listen: str, tls: str = "") -> str:
    """reviews split 50/50, ratings readable only through the gateway `ingress`."""
    return f"""
mesh: e2e
telemetry: {{access_log: true}}
services:
  productpage: {{port: 9080}}
  reviews:
    port: 9080
    subsets: {{v1: {{version: v1}}, v2: {{version: v2}}}}
    routes:
      - name: split
        to: [{{subset: v1, weight: 50}}, {{subset: v2, weight: 50}}]
  ratings: {{port: 9080}}
gateways:
  ingress:
    listen: {listen}
{block(tls, 4)}
    hosts:
      shop.example: reviews
      api.example:
        - {{path_prefix: /ratings, service: ratings}}
        - {{service: reviews}}
policies:
  - name: only-ingress-reads-ratings
    service: ratings
    action: allow
    from: [ingress]
"""


def get(conn: http.client.HTTPConnection, host: str, path: str = "/") -> tuple[int, str]:
    """Status and the answering app's service/version (empty when no app answered)."""
    conn.request("GET", path, headers={"Host": host})
    response = conn.getresponse()
    response.read()
    service = response.getheader("x-app-service") or ""
    return response.status, f"{service}/{response.getheader('x-app-version') or ''}"


def test_the_gateway_routes_by_host_and_path_and_reports_itself_as_source(
    mesh_env: MeshEnv,
) -> None:
    gateway_ip = mesh_env.ips.ip()
    mesh = mesh_env.write_mesh(gateway_mesh(f"{gateway_ip}:{PORT}"))
    _, mixer = mesh_env.start_with_mixer(mesh)
    page = mesh_env.start_instance("productpage", "v1")
    v1 = mesh_env.start_instance("reviews", "v1")
    v2 = mesh_env.start_instance("reviews", "v2")
    ratings = mesh_env.start_instance("ratings", "v1")
    gateway = mesh_env.start_gateway("ingress", gateway_ip)
    gateway.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
    gateway.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])
    gateway.wait_hosts("outbound|9080||ratings", [ratings.inbound])

    conn = http.client.HTTPConnection(gateway_ip, PORT, timeout=5)
    try:
        split = Counter(get(conn, f"shop.example:{PORT}") for _ in range(ROUTES))
        by_path = get(conn, "api.example", "/ratings/7")
        other_path = get(conn, "api.example", "/reviews/7")
        unknown = get(conn, "nobody.example")
    finally:
        conn.close()
    with page.client() as client:
        refused = client.get("ratings", "/ratings/7").status

    assert set(split) == {(200, "reviews/v1"), (200, "reviews/v2")}, split  # the 50/50 split
    assert by_path == (200, "ratings/v1")  # the allow policy admits the gateway as a source
    assert other_path[0] == 200 and other_path[1].startswith("reviews/")
    assert unknown == (404, "/")
    assert refused == 403  # ...and no one else
    source = ("source", "ingress", "ratings", "v1", "200")
    destination = ("destination", "ingress", "ratings", "v1", "200")
    wait_for(
        lambda: {source, destination} <= requests_total(mixer.metrics()).keys(),
        10,
        message="the mixer to count the gateway's request with source ingress",
    )

    # A host added to the saved file is served live.
    edited = gateway_mesh(f"{gateway_ip}:{PORT}").replace(
        "      shop.example: reviews\n", "      shop.example: reviews\n      new.example: ratings\n"
    )
    assert "new.example" in edited
    mesh_env.write_mesh(edited)
    wait_for(
        lambda: fetch_once(gateway_ip, "new.example") == (200, "ratings/v1"),
        10,
        message="the gateway to route a host added live",
    )


def fetch_once(ip: str, host: str, port: int = PORT) -> tuple[int, str]:
    """One request on a new connection (`get`'s answer)."""
    conn = http.client.HTTPConnection(ip, port, timeout=5)
    try:
        return get(conn, host)
    finally:
        conn.close()


def test_a_tls_gateway_serves_its_certificate_files(mesh_env: MeshEnv, tmp_path: Path) -> None:
    gateway_ip = mesh_env.ips.ip()
    authority = CertificateAuthority.open(tmp_path / "test-ca", "test.example")
    credentials = authority.server_certificate(["shop.example"], [gateway_ip])
    (tmp_path / "gateway.pem").write_bytes(credentials.chain_pem)
    (tmp_path / "gateway.key").write_bytes(credentials.key_pem)
    tls = f"tls: {{cert: {tmp_path / 'gateway.pem'}, key: {tmp_path / 'gateway.key'}}}"
    mesh = gateway_mesh(f"{gateway_ip}:{PORT}", tls)
    mesh_env.start_control_plane(mesh_env.write_mesh(mesh))
    v1 = mesh_env.start_instance("reviews", "v1")
    v2 = mesh_env.start_instance("reviews", "v2")  # the route splits between the two
    gateway = mesh_env.start_gateway("ingress", gateway_ip)
    gateway.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
    gateway.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])

    context = ssl.create_default_context(cadata=authority.chain_pem.decode())
    conn = http.client.HTTPSConnection(gateway_ip, PORT, timeout=5, context=context)
    try:
        answered = get(conn, "shop.example")
        certificate = conn.sock.getpeercert()
    finally:
        conn.close()
    assert answered in {(200, "reviews/v1"), (200, "reviews/v2")}
    assert ("DNS", "shop.example") in certificate["subjectAltName"]
    plain = http.client.HTTPConnection(gateway_ip, PORT, timeout=5)
    try:
        plain.request("GET", "/", headers={"Host": "shop.example"})
        refused_plaintext = False
        plain.getresponse()
    except (ConnectionError, http.client.HTTPException):
        refused_plaintext = True
    finally:
        plain.close()
    assert refused_plaintext


def test_up_runs_the_declared_gateway(mesh_env: MeshEnv) -> None:
    listen = f"{mesh_env.ips.ip()}:{PORT}"
    mesh = mesh_env.write_mesh(
        f"""
        mesh: up-gateway
        services:
          frontend:
            port: 8080
            run: [{{command: "{RUN}", version: v1}}]
        gateways:
          ingress:
            listen: {listen}
            hosts: {{shop.example: frontend}}
        """
    )
    up = mesh_env.processes.start("up", [MESHPILOT, "up", str(mesh)], cwd=mesh_env.tmp)
    wait_for(lambda: "ready; Ctrl-C" in up.log(), 60, message="up to be ready", procs=[up])
    assert f"gateway ingress: http://{listen} (Host: shop.example)" in up.log()
    host, port = listen.rsplit(":", 1)

    wait_for(
        lambda: fetch_once(host, "shop.example", int(port)) == (200, "frontend/v1"),
        20,
        message="frontend through the gateway",
        ignore=(OSError,),
        procs=[up],
    )
