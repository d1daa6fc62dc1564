"""Workload identity with real Envoys (issue #12): sidecars hold certificates from the mesh CA,
rogue ADS clients are refused and change nothing, certificates rotate under load and a
permissive service turns strict with no failed request."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness.client import LoadGenerator
from harness.mesh import Instance, MeshEnv
from harness.wait import http_json, wait_for
from meshes import caller_mesh, start_called

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support (not shipped)

from meshpilot.model import proxies
from meshpilot.xds.types import CLUSTER
from tests.support.client import AdsClient, sidecar_node

MESH = caller_mesh("reviews: {port: 9080}")
REVIEWS = "outbound|9080||reviews"


def workload_certificate(instance: Instance) -> dict[str, Any]:
    """The certificate a sidecar's Envoy presents, from its admin `/certs` (SDS-delivered)."""
    for entry in http_json(f"{instance.admin.url}/certs")["certificates"]:
        for certificate in entry.get("cert_chain", []):
            if any("uri" in san for san in certificate.get("subject_alt_names", [])):
                found: dict[str, Any] = certificate
                return found
    raise AssertionError(f"{instance.node_id} presents no workload certificate")


def spiffe_ids(certificate: dict[str, Any]) -> list[str]:
    return [san["uri"] for san in certificate["subject_alt_names"] if "uri" in san]


def test_sidecars_hold_their_services_certificate_and_call_over_mtls(mesh_env: MeshEnv) -> None:
    page, (reviews,) = start_called(mesh_env, MESH, ["reviews"])
    assert spiffe_ids(workload_certificate(reviews)) == ["spiffe://e2e/service/reviews"]
    assert spiffe_ids(workload_certificate(page)) == ["spiffe://e2e/service/productpage"]
    with page.client() as client:
        assert client.get("reviews", "/").status == 200
    handshakes = page.admin.stat(f"cluster.{REVIEWS}.ssl.handshake")
    assert handshakes >= 1  # the hop to reviews was TLS, with the caller's certificate


async def rogue_join(mesh_env: MeshEnv, proxy: proxies.Proxy, token: str | None) -> grpc.StatusCode:
    """An ADS client that is not a sidecar of the mesh, trying to join as `proxy`."""
    assert mesh_env.control_plane is not None
    credentials = grpc.ssl_channel_credentials(mesh_env.trust_anchor())
    node = sidecar_node(proxy)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async with AdsClient(mesh_env.control_plane.xds, node, credentials, token) as client:
            client.send(CLUSTER)
            await client.receive()
    return raised.value.code()


async def test_rogue_ads_clients_are_refused_and_receive_no_traffic(mesh_env: MeshEnv) -> None:
    """Without a token, with another service's token, or with an address that is not an IP,
    a rogue becomes no endpoint: every request still reaches the real instance."""
    page, (reviews,) = await asyncio.to_thread(start_called, mesh_env, MESH, ["reviews"])
    rogue_ip = mesh_env.ips.ip()
    rogue = proxies.Proxy(f"reviews~{rogue_ip}", "reviews", rogue_ip, 8080, (("version", "v1"),))
    productpage_token = mesh_env.token("productpage", {"version": "v1"}, any_address=True)
    reviews_token = mesh_env.token("reviews", {"version": "v1"}, any_address=True)
    not_an_ip = proxies.Proxy("reviews~x", "reviews", "not-an-ip.invalid", 8080, rogue.labels)
    assert await rogue_join(mesh_env, rogue, None) == grpc.StatusCode.UNAUTHENTICATED
    assert await rogue_join(mesh_env, rogue, productpage_token) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert await rogue_join(mesh_env, not_an_ip, reviews_token) == grpc.StatusCode.INVALID_ARGUMENT
    metrics = mesh_env.control_plane.metrics() if mesh_env.control_plane else ""
    for reason in ("no_token", "wrong_service", "bad_node"):
        assert f'meshpilot_xds_streams_refused_total{{reason="{reason}"}} 1.0' in metrics

    def answered_by() -> set[str]:
        with page.client() as client:
            return {client.get("reviews", "/").json()["ip"] for _ in range(20)}

    assert await asyncio.to_thread(answered_by) == {reviews.ip}
    # Endpoint updates still reach every sidecar: a second real instance becomes a member.
    second = await asyncio.to_thread(mesh_env.start_instance, "reviews", "v1")
    await asyncio.to_thread(page.admin.wait_hosts, REVIEWS, [reviews.inbound, second.inbound])


def test_a_sidecar_with_another_services_token_does_not_start(mesh_env: MeshEnv) -> None:
    mesh_env.start_control_plane(mesh_env.write_mesh(MESH))
    ip = mesh_env.ips.ip()
    sidecar = mesh_env.start_sidecar("reviews", "v1", ip, token=mesh_env.token("productpage"))
    wait_for(lambda: sidecar.returncode is not None, 20, message="the sidecar to exit")
    assert sidecar.returncode == 1
    assert "join token for service 'productpage', not 'reviews'" in sidecar.log()


ROTATING = MESH + "security: {certificate_ttl: 60s}\n"
ROTATIONS = 2


@pytest.mark.slow
def test_certificates_rotate_under_load_with_no_failed_request(mesh_env: MeshEnv) -> None:
    """60 s certificates are renewed about every 30 s: each sidecar presents new ones while
    requests flow, and none fails."""
    page, (reviews,) = start_called(mesh_env, ROTATING, ["reviews"])
    seen: dict[str, set[str]] = {page.ip: set(), reviews.ip: set()}

    def rotated() -> bool:
        for instance in (page, reviews):
            seen[instance.ip].add(workload_certificate(instance)["serial_number"])
        return all(len(serials) > ROTATIONS for serials in seen.values())

    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        wait_for(rotated, 75 * ROTATIONS, interval=1.0, message="certificate rotations")
        load.wait_for_results(100)
    assert load.failures() == [], load.summary()


PERMISSIVE = caller_mesh("reviews: {port: 9080, security: {mtls: permissive}}")


def inbound_chains(instance: Instance) -> int:
    return len(instance.admin.dynamic_listeners()["inbound"]["filter_chains"])


def test_a_permissive_service_turns_strict_under_load_with_no_failed_request(
    mesh_env: MeshEnv,
) -> None:
    page, (reviews,) = start_called(mesh_env, PERMISSIVE, ["reviews"])
    assert inbound_chains(reviews) == 2  # TLS and plaintext
    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(50)
        mesh_env.write_mesh(MESH)
        wait_for(lambda: inbound_chains(reviews) == 1, 10, message="the strict listener")
        load.wait_for_results(100)
    assert load.failures() == [], load.summary()
