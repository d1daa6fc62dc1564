"""A control-plane replica cut off from the network (its own network namespace, its link taken
down): it stops registering, the other replicas expire its instances with its lease, and its
sidecars come back through another replica once they notice their stream is dead."""

from __future__ import annotations

import os
import time

import pytest
from harness.etcd import EtcdCluster, EtcdMember
from harness.mesh import MESHPILOT, ControlPlane, MeshEnv
from harness.wait import wait_for, wait_http_ok
from meshes import CALLER, reviews_mesh
from test_replicas import held_by, registry_keys
from test_up_netns import namespaces_usable  # noqa: F401 (skips this module without netns)

from meshpilot.runner import netns
from meshpilot.store.etcd import LEASE_TTL_S, STORE_ERRORS

pytestmark = pytest.mark.slow

# Envoy notices a dead control-plane connection by its HTTP/2 keepalive (30 s, 5 s timeout).
DEAD_STREAM_NOTICED_S = 45.0


def start_in_namespace(env: MeshEnv, bridge: netns.Bridge, store: str) -> ControlPlane:
    """An insecure replica in a namespace of its own on `bridge`, reading the test's mesh."""
    ip = bridge.next_ip()
    namespace = bridge.add_namespace("cp", ip)
    mesh = env.tmp / "mesh.yaml"
    argv = [MESHPILOT, "serve", str(mesh), "--xds", f"{ip}:18000", "--admin", f"{ip}:18001"]
    argv += ["--insecure", "--store", store]
    proc = env.processes.start("controlplane-isolated", netns.exec_argv(namespace, argv))
    replica = ControlPlane(proc, ip, 18000, 18001, mesh, secure=False)
    wait_http_ok(f"{replica.admin_url}/healthz", 20, procs=[proc])
    env.control_plane = replica
    env.replicas.append(replica)
    return replica


def test_a_partitioned_replica_stops_registering_and_the_others_expire_its_instances(
    mesh_env: MeshEnv,
) -> None:
    with netns.Bridge(os.getpid()) as bridge:
        try:
            partitioned_replica(mesh_env, bridge)
        finally:
            mesh_env.processes.stop_all()  # before the namespaces go


def partitioned_replica(env: MeshEnv, bridge: netns.Bridge) -> None:
    etcd = EtcdCluster(env.processes, [EtcdMember("m0", bridge.ip, env.tmp / "etcd")])
    etcd.start()
    env.write_mesh(reviews_mesh(50, 50))
    isolated = start_in_namespace(env, bridge, etcd.url)
    # Both replicas listed, started while only the isolated one is up: their streams go to it.
    both = f"{isolated.xds},{bridge.ip}:18000"
    v1 = env.start_instance("reviews", "v1", xds=both)
    v2 = env.start_instance("reviews", "v2", xds=both)
    other = env.start_control_plane(isolated.mesh_path, ip=bridge.ip, insecure=True, store=etcd.url)
    page = env.start_instance(CALLER, "v1", xds=other.xds)  # on the side that stays up
    assert held_by(isolated) == {v1.node_id, v2.node_id}
    page.admin.wait_hosts("outbound|9080||reviews", [v1.inbound, v2.inbound], 15)

    netns.ip("link", "set", bridge.veths[0], "down")  # the partition
    cut_at = time.monotonic()
    wait_for(  # its lease expires: only what the other replica holds is left
        lambda: len(registry_keys(etcd.url)) == 1,
        LEASE_TTL_S + 10,
        message="the partitioned replica's registrations expired",
        ignore=STORE_ERRORS,
    )
    page.admin.wait_hosts("outbound|9080||reviews", [], 10)
    expired_in = time.monotonic() - cut_at
    # Its sidecars notice their dead stream, move to the other replica and are back.
    everyone = [v1.inbound, v2.inbound]
    page.admin.wait_hosts("outbound|9080||reviews", everyone, DEAD_STREAM_NOTICED_S)
    assert held_by(other) == {page.node_id, v1.node_id, v2.node_id}
    print(f"expired {expired_in:.1f} s after the cut, back {time.monotonic() - cut_at:.1f} s after")
