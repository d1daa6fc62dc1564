"""Secure replicas share one mesh CA and one token key through etcd (issue #17, item 5), with
real Envoy and traffic: each replica has a state directory of its own, the tokens come from
`meshpilot token --store`, and a sidecar whose replica dies goes on with another replica, the
same token and a certificate of the same CA; a sidecar listing the dead replica first is
certified by the next; a token revoked through the store is refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
from harness.client import LoadGenerator
from harness.etcd import EtcdCluster
from harness.mesh import MESHPILOT, XDS_PORT, MeshEnv
from harness.wait import wait_for
from meshes import CALLER, caller_mesh
from test_restart import describe

from meshpilot.identity.agent import WorkloadKey
from meshpilot.identity.authority import BINDING
from meshpilot.identity.ca import ROOT_CERT
from meshpilot.identity.client import CertificateClient, SigningRefused
from meshpilot.identity.tokens import read_token

pytestmark = pytest.mark.slow  # several control planes and etcd members: `make test-slow`

MESH = caller_mesh("reviews: {port: 9080}")
MESH_WITH_RATINGS = caller_mesh("reviews: {port: 9080}\nratings: {port: 9080}")


def store_token(url: str, state_dir: Path, service: str) -> str:
    """A join token as `meshpilot token --store` prints it, on a host with no replica."""
    argv = [MESHPILOT, "token", "--store", url, "--state-dir", str(state_dir)]
    argv += ["--service", service]
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


def refused_as_revoked(xds: str, token: str) -> bool:
    """Whether the replica at `xds` refuses to certify `token`'s holder because it is revoked."""

    async def ask() -> bool:
        client = CertificateClient(xds, token)
        try:
            await client.sign(WorkloadKey())
        except SigningRefused as err:
            return "revoked" in str(err)
        finally:
            await client.close()
        return False

    return asyncio.run(ask())


def ca_fingerprint(state_dir: Path) -> str:
    """The CA fingerprint of the mesh a replica with `state_dir` opened."""
    return str(json.loads((state_dir / BINDING).read_text())["ca_fingerprint"])


def test_a_secure_sidecar_moves_to_another_replica_with_its_token_and_the_one_ca(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    path = mesh_env.write_mesh(MESH)
    state_a, state_b = mesh_env.tmp / "state-a", mesh_env.tmp / "state-b"
    a = mesh_env.start_control_plane(path, store=etcd.url, state_dir=state_a)
    b_ip = mesh_env.ips.ip()
    b_xds = f"{b_ip}:{XDS_PORT}"
    tokens = {s: store_token(etcd.url, mesh_env.tmp / "cli", s) for s in ("reviews", CALLER)}
    # reviews joins through A (B is not there yet): its certificate is A's signature.
    reviews = mesh_env.start_instance("reviews", xds=f"{a.xds},{b_xds}", token=tokens["reviews"])
    a.wait_synced([reviews.node_id])
    b = mesh_env.start_control_plane(path, store=etcd.url, ip=b_ip, state_dir=state_b)
    # The caller gets its certificate from B: strict mTLS between the two needs one CA.
    page = mesh_env.start_instance(CALLER, xds=f"{b.xds},{a.xds}", token=tokens[CALLER])
    page.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])
    assert ca_fingerprint(state_a) == ca_fingerprint(state_b)
    assert read_token(tokens["reviews"]).ca_fingerprint == ca_fingerprint(state_b)
    assert (state_a / ROOT_CERT).read_bytes() == (state_b / ROOT_CERT).read_bytes()

    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(30)
        killed_at = time.monotonic()
        assert mesh_env.processes.kill(a.proc) == -9
        b.wait_synced([reviews.node_id, page.node_id], timeout=15)
        load.wait_for_results(30)
    failures = load.failures()
    assert failures == [], f"{len(failures)} failed: {describe(failures, killed_at)}"
    assert load.since(killed_at), "no request after the kill"

    # reviews, now on B with its token, keeps receiving configuration.
    path.write_text(MESH_WITH_RATINGS)
    wait_for(
        lambda: "outbound|9080||ratings" in reviews.admin.dynamic_clusters(),
        10,
        message="reviews' sidecar to get the new service from B",
        ignore=(OSError,),
    )

    # A sidecar that lists dead A first joins through B: its agent asks B for its certificate.
    late = mesh_env.start_instance("reviews", xds=f"{a.xds},{b.xds}", token=tokens["reviews"])
    page.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound, late.inbound], 15)
    with page.client() as client:
        assert [client.get("reviews").status for _ in range(10)] == [200] * 10

    # A token revoked through the store is refused by the replica left.
    revoked = read_token(tokens["reviews"]).token_id
    argv = [MESHPILOT, "token", "--revoke", revoked, "--store", etcd.url]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    wait_for(lambda: refused_as_revoked(b.xds, tokens["reviews"]), 10, message="B to refuse it")
    assert not refused_as_revoked(b.xds, tokens[CALLER])
