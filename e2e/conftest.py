"""Fixtures for end-to-end tests with real processes (control plane, Envoy sidecars, test app).

Every test gets its own loopback block, its own log directory under `tmp_path/logs`, and a
teardown that stops every process it started. When a test fails, the tail of each process's
log is attached to the report ("process logs" section).

    @pytest.mark.e2e
    def test_something(mesh_env: MeshEnv) -> None:
        cp = mesh_env.start_control_plane(mesh_env.write_mesh(MESH))
        reviews = mesh_env.start_instance("reviews", "v1")
        ...
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from harness.etcd import EtcdCluster, start_etcd
from harness.mesh import MeshEnv
from harness.processes import Processes

from meshpilot.runner.addresses import LoopbackAllocator

PROCESSES_KEY = pytest.StashKey[Processes]()
E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under e2e/ is an e2e test, marked or not."""
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
def loopback() -> Iterator[LoopbackAllocator]:
    """Distinct 127.X.Y.Z addresses no concurrently running test uses."""
    allocator = LoopbackAllocator()
    yield allocator
    allocator.release()


@pytest.fixture
def processes(
    request: pytest.FixtureRequest, tmp_path: Path, loopback: LoopbackAllocator
) -> Iterator[Processes]:
    """Starts processes for this test; all of them are stopped afterwards, pass or fail.

    Depends on `loopback` so that processes stop before their addresses are released."""
    procs = Processes(tmp_path / "logs")
    request.node.stash[PROCESSES_KEY] = procs
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def mesh_env(tmp_path: Path, loopback: LoopbackAllocator, processes: Processes) -> MeshEnv:
    """A control plane, instances and clients for one test (see harness.mesh.MeshEnv)."""
    return MeshEnv(tmp_path, loopback, processes)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure, attach the tail of every process log (taken before teardown kills them)."""
    report = yield
    procs = item.stash.get(PROCESSES_KEY, None)
    if report.failed and procs is not None and procs.procs:
        report.sections.append((f"process logs ({report.when})", procs.tails()))
    return report


@pytest.fixture
def etcd(tmp_path: Path, loopback: LoopbackAllocator, processes: Processes) -> EtcdCluster:
    """One real etcd member on a loopback IP of this test's own (stopped with `processes`)."""
    return start_etcd(processes, loopback, tmp_path)


@pytest.fixture
def etcd_cluster(tmp_path: Path, loopback: LoopbackAllocator, processes: Processes) -> EtcdCluster:
    """A real three-member etcd cluster, each member on its own loopback IP."""
    return start_etcd(processes, loopback, tmp_path, size=3)
