"""Control-plane replicas on etcd with real Envoy sidecars and real traffic: every replica serves
every instance; a replica killed under load costs no request and its sidecars resync elsewhere
with nothing re-pushed; a replica stopped gracefully leaves its instances in every sidecar's
endpoints until its lease expires, its sidecars registered elsewhere meanwhile; replicas ride
out etcd being down, and the loss of one etcd member."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from harness.client import LoadGenerator, MeshClient
from harness.etcd import EtcdCluster
from harness.mesh import ControlPlane, Instance, MeshEnv
from harness.wait import http_get, http_json, wait_for
from meshes import CALLER, reviews_mesh
from test_restart import acked_versions, describe, pushes_total
from test_up import pids_running, start_up

from meshpilot.store import open_store
from meshpilot.store.etcd import LEASE_TTL_S, REGISTRY, STORE_ERRORS, EtcdStore

pytestmark = pytest.mark.slow  # several control planes and etcd members: `make test-slow`

REPLICAS = 2


def start_replicated_mesh(
    env: MeshEnv, etcd: EtcdCluster
) -> tuple[list[ControlPlane], Instance, Instance, Instance]:
    """Two replicas on `etcd` serving one mesh file, a caller and reviews v1 and v2, each
    sidecar listing both replicas; returns once the caller has both reviews instances."""
    path = env.write_mesh(reviews_mesh(50, 50))
    replicas = [env.start_control_plane(path, store=etcd.url) for _ in range(REPLICAS)]
    page = env.start_instance(CALLER, "v1")
    v1 = env.start_instance("reviews", "v1")
    v2 = env.start_instance("reviews", "v2")
    page.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
    page.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])
    return replicas, page, v1, v2


def held_by(replica: ControlPlane) -> set[str]:
    return {p["node_id"] for p in replica.proxies()}


def wait_all_held(replicas: list[ControlPlane], nodes: list[str]) -> None:
    """Every node streams to exactly one of `replicas`, and is SYNCED there."""

    def held_once() -> bool:
        held = [held_by(r) for r in replicas]
        return sorted(n for h in held for n in h) == sorted(nodes)

    wait_for(held_once, 15, message=f"{nodes} each held by one replica", ignore=(OSError,))
    for replica in replicas:
        replica.wait_synced(held_by(replica))


def registry_keys(url: str) -> list[str]:
    """The registry's keys in etcd: one per instance a live replica holds (STORE_ERRORS when
    the member asked has just died)."""

    async def keys() -> list[str]:
        store = open_store(url)
        assert isinstance(store, EtcdStore)
        try:
            return [kv.key.decode() for kv in await store.client.get_prefix(REGISTRY)]
        finally:
            await store.close()

    return asyncio.run(keys())


def healthz(replica: ControlPlane) -> str:
    return http_get(f"{replica.admin_url}/healthz").text


def store_up(replica: ControlPlane) -> str:
    return next(
        line.split()[-1]
        for line in replica.metrics().splitlines()
        if line.startswith("meshpilot_store_up ")
    )


def test_every_replica_serves_the_instances_of_every_replica(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    replicas, page, v1, v2 = start_replicated_mesh(mesh_env, etcd)
    nodes = [page.node_id, v1.node_id, v2.node_id]
    wait_all_held(replicas, nodes)
    # Whichever replica each sidecar streams to, the caller reaches both versions.
    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(40)
    assert load.failures() == [], load.summary()
    assert {r.body["version"] for r in load.results} == {"v1", "v2"}
    # Each replica registered what it holds, under its own lease.
    wait_for(lambda: len(registry_keys(etcd.url)) == len(nodes), 10, ignore=STORE_ERRORS)
    for replica in replicas:
        assert f"store {etcd.url}: connected" in healthz(replica)
        assert store_up(replica) == "1.0"


def test_a_replica_killed_under_load_costs_no_request_and_its_sidecars_get_nothing_new(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    replicas, page, v1, v2 = start_replicated_mesh(mesh_env, etcd)
    nodes = [page.node_id, v1.node_id, v2.node_id]
    wait_all_held(replicas, nodes)
    victim = max(replicas, key=lambda r: len(held_by(r)))
    survivor = next(r for r in replicas if r is not victim)
    moving = held_by(victim)
    before = {node: types for r in replicas for node, types in acked_versions(r).items()}
    pushed_before = pushes_total(survivor)

    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(50)
        killed_at = time.monotonic()
        assert mesh_env.processes.kill(victim.proc) == -9
        survivor.wait_synced(nodes, timeout=15)
        moved_in = time.monotonic() - killed_at
        # The victim's lease expires: only the survivor's registrations are left.
        wait_for(
            lambda: len(registry_keys(etcd.url)) == len(nodes),
            LEASE_TTL_S + 10,
            message="the killed replica's registrations expired",
            ignore=STORE_ERRORS,
        )
        load.wait_for_results(50)

    failures = load.failures()
    assert failures == [], f"{len(failures)} failed: {describe(failures, killed_at)}"
    assert moving, "the killed replica held no sidecar"
    print(f"{sorted(moving)} moved to the survivor in {moved_in:.2f} s")
    # Same mesh, same registry: the survivor's versions are the ones the sidecars had.
    assert acked_versions(survivor) == before
    assert pushes_total(survivor) == pushed_before, survivor.metrics()
    assert {r.body["version"] for r in load.since(killed_at)} == {"v1", "v2"}


def test_a_replica_stopped_under_load_leaves_its_instances_to_its_lease(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    replicas, page, v1, v2 = start_replicated_mesh(mesh_env, etcd)
    nodes = [page.node_id, v1.node_id, v2.node_id]
    wait_all_held(replicas, nodes)
    reviews = {v1.node_id, v2.node_id}
    victim = max(replicas, key=lambda r: len(held_by(r) & reviews))
    survivor = next(r for r in replicas if r is not victim)
    held_before_stop = held_by(victim)
    moving = held_before_stop & reviews

    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(50)
        stopped_at = time.monotonic()
        assert mesh_env.processes.terminate(victim.proc) == 0  # SIGTERM: a graceful stop
        survivor.wait_synced(nodes, timeout=15)
        # Its sidecars are registered by the survivor while its own keys are still there
        # (until its lease expires, LEASE_TTL_S after its last renewal)...
        wait_for(
            lambda: len(registry_keys(etcd.url)) == len(nodes) + len(held_before_stop),
            LEASE_TTL_S / 2,
            message="the survivor's and the stopped replica's registrations, both",
            ignore=STORE_ERRORS,
        )
        # ...which expire with its lease, not at its stop.
        wait_for(
            lambda: len(registry_keys(etcd.url)) == len(nodes),
            LEASE_TTL_S + 10,
            message="the stopped replica's registrations expired",
            ignore=STORE_ERRORS,
        )
        load.wait_for_results(50)

    assert moving, "the stopped replica held no reviews sidecar"
    failures = load.failures()
    assert failures == [], f"{len(failures)} failed: {describe(failures, stopped_at)}"
    assert {r.body["version"] for r in load.since(stopped_at)} == {"v1", "v2"}


def test_replicas_serve_the_last_state_while_etcd_is_down_and_catch_up_after(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    replicas, page, v1, _v2 = start_replicated_mesh(mesh_env, etcd)
    wait_all_held(replicas, [page.node_id, v1.node_id, _v2.node_id])
    (member,) = etcd.members

    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(20)
        etcd.kill(member)
        down_at = time.monotonic()
        for replica in replicas:
            wait_for(lambda r=replica: "unreachable since" in healthz(r), 15, ignore=(OSError,))
            assert store_up(replica) == "0.0"
            assert http_get(f"{replica.admin_url}/healthz").status == 200
        # A new instance joins while etcd is down: only its own replica knows it for now.
        late = mesh_env.start_instance("reviews", "v1")
        etcd.start_member(member)
        for replica in replicas:
            wait_for(lambda r=replica: "connected" in healthz(r), 15, ignore=(OSError,))
            assert store_up(replica) == "1.0"
        # Caught up: the caller, whichever replica it streams to, has the late instance.
        page.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound, late.inbound], 15)
        load.wait_for_results(20)

    assert load.failures(since=down_at) == [], load.summary()


def test_losing_one_etcd_member_of_three_does_not_touch_traffic_or_registration(
    mesh_env: MeshEnv, etcd_cluster: EtcdCluster
) -> None:
    replicas, page, v1, v2 = start_replicated_mesh(mesh_env, etcd_cluster)
    wait_all_held(replicas, [page.node_id, v1.node_id, v2.node_id])

    with LoadGenerator(page.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(30)
        killed_at = time.monotonic()
        etcd_cluster.kill(etcd_cluster.members[0])
        late = mesh_env.start_instance("reviews", "v2")
        page.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound, late.inbound], 15)
        load.wait_for_results(30)

    assert load.failures() == [], f"{describe(load.failures(), killed_at)}"
    wait_for(  # the late instance is registered too, through the members left
        lambda: len(registry_keys(etcd_cluster.url)) == 4, 10, ignore=STORE_ERRORS
    )


def test_up_runs_replicas_on_a_local_etcd_that_share_every_sidecar(mesh_env: MeshEnv) -> None:
    up, rows, _plane = start_up(mesh_env, options=("--replicas", "2"))
    banner = up.log()
    admins = [
        line.rsplit("admin http://", 1)[1].split()[0]
        for line in banner.splitlines()
        if line.startswith(("control plane: xds ", "control plane replica: xds "))
    ]
    assert len(admins) == 2, banner
    etcd_url = next(line for line in banner.splitlines() if line.startswith("etcd "))
    for admin in admins:
        assert "store etcd://" in http_get(f"http://{admin}/healthz").text

    def held() -> int:
        return sum(len(http_json(f"http://{admin}/proxies")) for admin in admins)

    wait_for(lambda: held() == len(rows), 15, message="every sidecar held by one replica")
    frontend = next(r for r in rows if r.service == "frontend")
    with MeshClient(frontend.ip) as client:
        assert {client.get("backend").json()["version"] for _ in range(10)} == {"v1"}

    os.kill(up.pid, signal.SIGINT)
    wait_for(lambda: not up.alive(), 20, message="up to stop")
    assert up.returncode == 0
    assert pids_running(etcd_url.rsplit("http://", 1)[1]) == [], "etcd outlived up"
