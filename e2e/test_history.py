"""One mesh history on real etcd, served by two replicas to real Envoy sidecars: `meshpilot
apply` moves both replicas' traffic, `rollback` moves it back, a bad file stores nothing, and a
replica watching the mesh file publishes each save for the other to serve (GitOps)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from harness.etcd import EtcdCluster
from harness.mesh import MESHPILOT, ControlPlane, Instance, MeshEnv
from harness.wait import wait_for
from meshes import CALLER, reviews_mesh, version

from meshpilot.store import content_digest, open_store

pytestmark = pytest.mark.slow  # several control planes and etcd members: `make test-slow`

V1, V2 = reviews_mesh(100, 0), reviews_mesh(0, 100)
BAD = reviews_mesh(60, 30)
ROLLBACK_DEADLINE = 1.0  # s: replicas serve a new current version within a second
BAD_PROBLEM = ":12:13: services.reviews.routes[0].to: weights add up to 90; they must add up to 100"


def meshpilot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHPILOT, *args], capture_output=True, text=True, timeout=60)


def applied(path: Path, etcd: EtcdCluster) -> str:
    done = meshpilot("apply", str(path), "--store", etcd.url, "--author", "tester")
    assert done.returncode == 0, done.stderr
    return done.stdout


def history_rows(etcd: EtcdCluster) -> list[list[str]]:
    done = meshpilot("history", "--store", etcd.url)
    assert done.returncode == 0, done.stderr
    return [line.split() for line in done.stdout.splitlines()[1:]]


def caller_on(env: MeshEnv, replica: ControlPlane) -> Instance:
    """A caller whose sidecar streams to `replica` alone (with a token for what it claims)."""
    token = env.token(CALLER, {"version": "v1"})
    return env.start_instance(CALLER, "v1", xds=replica.xds, token=token)


def wait_answered_by(callers: list[Instance], wanted: str) -> None:
    """Every caller's next 10 requests to reviews answered by reviews `wanted`."""
    for caller in callers:
        with caller.client() as client:

            def answered() -> bool:
                return all(version(client, "/") == wanted for _ in range(10))

            wait_for(
                answered, 5, message=f"{caller.ip} by {wanted}", ignore=(OSError, AssertionError)
            )


def start_reviews(env: MeshEnv, callers: list[Instance]) -> None:
    v1, v2 = env.start_instance("reviews", "v1"), env.start_instance("reviews", "v2")
    for caller in callers:
        caller.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
        caller.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])


def test_apply_and_rollback_move_both_replicas_traffic(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    path = mesh_env.write_mesh(V1)
    assert "stored version 1" in applied(path, etcd)
    replicas = [mesh_env.start_control_plane(None, store=etcd.url) for _ in range(2)]
    callers = [caller_on(mesh_env, replica) for replica in replicas]
    start_reviews(mesh_env, callers)
    wait_answered_by(callers, "v1")

    mesh_env.write_mesh(V2)
    assert "stored version 2" in applied(path, etcd)
    wait_answered_by(callers, "v2")
    assert [r.mesh()["stored_version"] for r in replicas] == [2, 2]
    assert {r.mesh()["version"] for r in replicas} == {content_digest(V2.encode())}
    assert "unchanged" in applied(path, etcd), "the current content again stores nothing"

    back = meshpilot("rollback", "1", "--store", etcd.url)
    assert back.returncode == 0 and "stored version 3" in back.stdout, back.stderr
    wait_for(
        lambda: [r.mesh()["stored_version"] for r in replicas] == [3, 3],
        ROLLBACK_DEADLINE,
        message="both replicas serve version 3",
    )
    wait_answered_by(callers, "v1")
    rows = history_rows(etcd)
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert rows[1][2:5] == ["tester", content_digest(V2.encode()), "superseded"]
    assert rows[2][4:] == ["current", "rollback", "to", "1"]

    unknown = meshpilot("rollback", "9", "--store", etcd.url)
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr == "error: no version 9 in the mesh history (it holds versions 1 to 3)\n"


def test_an_invalid_apply_stores_nothing_and_says_where(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    path = mesh_env.write_mesh(V1)
    applied(path, etcd)
    mesh_env.write_mesh(BAD)
    done = meshpilot("apply", str(path), "--store", etcd.url)
    assert done.returncode == 1
    assert done.stdout == f"{path}{BAD_PROBLEM}\n"
    assert [row[0] for row in history_rows(etcd)] == ["1"]


def store_unchecked(etcd: EtcdCluster, content: str, source: Path) -> None:
    """Store `content` as the next version without validating it, as `apply` never would (an
    older meshpilot, or a file a replica's host lacks)."""

    async def append() -> None:
        store = open_store(etcd.url)
        try:
            await store.history.append(content.encode(), str(source), "someone")
        finally:
            await store.close()

    asyncio.run(append())


def test_a_stored_version_a_replica_cannot_use_leaves_the_last_good_one_serving(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    path = mesh_env.write_mesh(V1)
    applied(path, etcd)
    replica = mesh_env.start_control_plane(None, store=etcd.url)
    caller = caller_on(mesh_env, replica)
    start_reviews(mesh_env, [caller])
    wait_answered_by([caller], "v1")

    store_unchecked(etcd, BAD, path)
    problems = wait_for(lambda: replica.mesh()["problems"], 5, message="version 2 rejected")
    assert problems == [f"{path}{BAD_PROBLEM}"]
    assert replica.mesh()["stored_version"] == 1
    wait_answered_by([caller], "v1")

    mesh_env.write_mesh(V2)
    applied(path, etcd)
    wait_answered_by([caller], "v2")
    assert replica.mesh()["problems"] == [] and replica.mesh()["stored_version"] == 3


def test_a_file_watching_replica_publishes_each_save_the_other_serves(
    mesh_env: MeshEnv, etcd: EtcdCluster
) -> None:
    path = mesh_env.write_mesh(V1)
    watching = mesh_env.start_control_plane(path, store=etcd.url)
    other = mesh_env.start_control_plane(None, store=etcd.url)
    caller = caller_on(mesh_env, other)
    start_reviews(mesh_env, [caller])
    wait_answered_by([caller], "v1")

    mesh_env.write_mesh(V2)
    wait_answered_by([caller], "v2")
    rows = history_rows(etcd)
    assert [row[0] for row in rows] == ["1", "2"]
    assert rows[1][4:] == ["current", "save", "seen", "by", "serve"]

    mesh_env.write_mesh(BAD)
    problems = wait_for(lambda: watching.mesh()["problems"], 5, message="the bad save rejected")
    assert problems == [f"{path}{BAD_PROBLEM}"]
    assert [row[0] for row in history_rows(etcd)] == ["1", "2"]
    wait_answered_by([caller], "v2")
