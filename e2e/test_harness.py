"""Self-tests of the e2e harness: the test app, loopback allocation, process teardown, and real
Envoy sidecars started with no control plane (or with a stand-in ADS server)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from harness import (
    EnvoyAdmin,
    LoadGenerator,
    LoopbackAllocator,
    MeshClient,
    MeshEnv,
    NotYet,
    Processes,
    Result,
    envoy_state,
    free_port,
    http_get,
    pid_alive,
    wait_for,
)
from harness.fake_xds import FakeAdsServer

from meshpilot.runner.addresses import block_prefix, try_claim

pytestmark = pytest.mark.e2e
HARNESS_DIR = Path(__file__).parent


def test_app_answers_with_who_it_is(mesh_env: MeshEnv) -> None:
    ip = mesh_env.ips.ip()
    app = mesh_env.start_app("reviews", "v1", ip, 9080)
    with MeshClient(ip, 9080) as client:
        reply = client.request("reviews", "/a/b?c=1", method="POST", body="hi")
    assert reply.status == 200
    body = reply.json()
    assert body["service"] == "reviews"
    assert body["version"] == "v1"
    assert body["ip"] == ip
    assert (body["method"], body["path"], body["body"]) == ("POST", "/a/b?c=1", "hi")
    assert body["headers"]["host"] == "reviews"
    assert reply.headers["x-app-version"] == "v1"
    assert mesh_env.processes.stop(app) == 0
    assert app.log() == ""


def test_app_status_delay_and_failures(mesh_env: MeshEnv) -> None:
    ip = mesh_env.ips.ip()
    mesh_env.start_app("ratings", "v2", ip, 8080)
    with MeshClient(ip, 8080) as client:
        assert client.get("ratings", "/status/418").status == 418
        assert client.get("ratings", "/status/204").body == b""
        assert client.get("ratings", "/delay/200").elapsed >= 0.2
        assert client.get("ratings", "/delay/10/status/503").status == 503
        fail = {"x-fail-times": "2", "x-fail-key": "k1"}
        statuses = [client.request("ratings", headers=fail).status for _ in range(3)]
        assert statuses == [503, 503, 200]
        other = {"x-fail-times": "1", "x-fail-key": "k2"}
        assert client.request("ratings", headers=other).status == 503
        assert client.request("ratings", method="HEAD").body == b""


def test_allocator_hands_out_distinct_addresses() -> None:
    first, second = LoopbackAllocator(), LoopbackAllocator()
    try:
        a = first.ips(300)  # more than one block
        b = second.ips(10)
        assert len(set(a + b)) == 310
        assert len(first.blocks) == 2
        assert not set(first.blocks) & set(second.blocks)
        for ip in a + b:
            assert ip.startswith("127.") and not ip.startswith("127.0.")
    finally:
        first.release()
        second.release()


def test_allocator_skips_blocks_claimed_by_another_process() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_BLOCK],
        cwd=HARNESS_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        held = int(holder.stdout.readline())
        allocator = LoopbackAllocator(start=held)
        assert try_claim(held) is None
        assert not allocator.ip().startswith(block_prefix(held) + ".")
        allocator.release()
    finally:
        holder.communicate("", timeout=10)


HOLD_BLOCK = """
import random, sys
from meshpilot.runner.addresses import TEST_RANGE, block_count, try_claim
while True:
    index = random.randrange(block_count(TEST_RANGE))
    claim = try_claim(index)
    if claim:
        break
print(index, flush=True)
sys.stdin.read()
"""


def test_loopback_addresses_bind_without_setup(loopback: LoopbackAllocator) -> None:
    ip = loopback.ip()
    port = free_port(ip)
    assert 0 < port < 65536


def test_sidecar_without_control_plane(mesh_env: MeshEnv) -> None:
    """Envoy starts, serves its admin API on IP:15000 and waits for its configuration."""
    ip, nowhere = mesh_env.ips.ip(), mesh_env.ips.ip()
    sidecar = mesh_env.start_sidecar("reviews", "v1", ip, xds=f"{nowhere}:{free_port(nowhere)}")
    admin = EnvoyAdmin(f"http://{ip}:15000")
    state = wait_for(admin.state, 15, message="Envoy admin", ignore=(OSError,), procs=[sidecar])
    assert state == "PRE_INITIALIZING"
    assert http_get(f"{admin.url}/ready").status == 503
    assert admin.server_info()["node"]["id"] == f"reviews~{ip}"
    envoy_pids = wait_for(lambda: [p for p in sidecar.group_pids() if p != sidecar.pid], 10)
    pids = [sidecar.pid, *envoy_pids]

    mesh_env.processes.stop_all()

    assert sidecar.returncode == 0
    wait_for(lambda: not any(pid_alive(p) for p in pids), 5, message=f"{pids} gone")
    assert sidecar.group_pids() == []


def test_teardown_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    processes = Processes(tmp_path)
    proc = processes.start("stubborn", [sys.executable, "-c", STUBBORN])
    wait_for(lambda: "ignoring SIGTERM" in proc.log(), 10, procs=[proc])
    started = time.monotonic()
    processes.stop_all(grace=0.5)
    assert proc.returncode == -9
    assert time.monotonic() - started < 5
    assert not pid_alive(proc.pid)


STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(60)
"""


def test_instance_goes_live_when_configured(mesh_env: MeshEnv) -> None:
    """With a stand-in ADS server (state of the world): the node identity arrives, Envoy goes
    LIVE."""
    cp_ip = mesh_env.ips.ip()
    ads = FakeAdsServer(cp_ip, 18000).start()
    try:
        instance = mesh_env.start_instance(
            "reviews", "v2", labels=["zone=eu"], xds=ads.address, xds_protocol="sotw"
        )
        node = ads.connections[0].node
        assert node["id"] == instance.node_id
        assert node["cluster"] == "reviews"
        assert node["metadata"] == {
            "service": "reviews",
            "ip": instance.ip,
            "app_port": 8080,
            "labels": {"version": "v2", "zone": "eu"},
        }
        assert envoy_state(instance.admin.url) == "LIVE"
        assert instance.admin.healthy_hosts("xds_cluster") == [ads.address]
        assert instance.admin.stat("control_plane.connected_state") == 1
    finally:
        ads.stop()


def test_sidecar_reconnects_within_a_second(mesh_env: MeshEnv) -> None:
    """The bootstrap's short ADS retry backoff: back within ~1s of the control plane."""
    cp_ip = mesh_env.ips.ip()
    ads = FakeAdsServer(cp_ip, 18000).start()
    instance = mesh_env.start_instance("reviews", "v1", xds=ads.address, xds_protocol="sotw")
    ads.stop()
    wait_for(lambda: instance.admin.stat("control_plane.connected_state") == 0, 10)
    # The outage lasts until the backoff is at its cap, as in a real one: from 0.1 s doubling
    # to 0.5 s, that is after four failed tries.
    failed_tries = "cluster.xds_cluster.upstream_cx_connect_fail"
    wait_for(lambda: instance.admin.stat(failed_tries) >= 4, 10, message="4 failed tries")
    ads = FakeAdsServer(cp_ip, 18000).start()
    try:
        restarted = time.monotonic()
        wait_for(lambda: ads.connections, 5, message="the sidecar to reconnect")
        assert ads.connections[0].connected_at - restarted < 1.0
    finally:
        ads.stop()


def test_client_and_load_generator(mesh_env: MeshEnv) -> None:
    ip = mesh_env.ips.ip()
    app = mesh_env.start_app("details", "v1", ip, 8080)
    with LoadGenerator(MeshClient(ip, 8080), "details", "/x", concurrency=2) as load:
        load.wait_for_results(20)
        assert load.failures() == [], load.summary()
        assert all(r.body["path"] == "/x" for r in load.results)
        mesh_env.processes.stop(app)
        wait_for(lambda: load.failures(), 5, message="failures after the app stopped")
    assert all(r.error for r in load.failures())


def test_effective_at() -> None:
    def result(at: float, version: str) -> Result:
        return Result(at, 0.001, 200, body={"version": version})

    load = LoadGenerator(MeshClient("127.0.0.1"), "x")
    load._results = [result(1, "v1"), result(2, "v2"), result(3, "v1"), result(4, "v2")]
    load._results.append(result(5, "v2"))
    assert load.effective_at(lambda r: r.body["version"] == "v2") == 4
    assert load.effective_at(lambda r: r.body["version"] == "v1") is None


def test_not_yet_reports_what_was_seen() -> None:
    def never() -> bool:
        raise NotYet("PRE_INITIALIZING")

    with pytest.raises(AssertionError, match="PRE_INITIALIZING"):
        wait_for(never, 0.2, ignore=(NotYet,))


def test_client_retries_once_on_a_closed_idle_connection(loopback: LoopbackAllocator) -> None:
    """A server may close a keep-alive connection just as the next request goes out."""
    ip = loopback.ip()
    with socket.create_server((ip, 0)) as server:
        port = server.getsockname()[1]
        thread = threading.Thread(target=_answer_then_close, args=(server, 2), daemon=True)
        thread.start()
        with MeshClient(ip, port) as client:
            first = client.get("x")
            second = client.get("x")
        thread.join(timeout=10)
    assert (first.status, first.retried) == (200, False)
    assert (second.status, second.retried) == (200, True)


def _answer_then_close(server: socket.socket, connections: int) -> None:
    """Answer one request per connection with a keep-alive response, then hang up."""
    for _ in range(connections):
        conn, _addr = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
