"""`meshpilot up --netns`: each instance in its own network namespace, where only its sidecar's
mTLS inbound port faces the others; everything made is gone once `up` stops."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.mesh import APP, MESHPILOT, MeshEnv
from harness.processes import Proc, pid_alive
from harness.wait import HttpReply, wait_for

from meshpilot.runner import netns

RUN = (
    f"{sys.executable} {APP} --ip {{ip}} --port {{app_port}} "
    "--service {service} --version {version}"
)
MESH = f"""
mesh: up-netns-test
services:
  frontend:
    port: 8080
    run: [{{command: "{RUN}", version: v1}}]
  backend:
    port: 9090
    run: [{{command: "{RUN}", version: v1}}]
policies:
  - {{name: only-frontend, service: backend, action: allow, from: [frontend]}}
"""
ADMIN, OUTBOUND, INBOUND = 15000, 15001, 15006


def ip_command(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module", autouse=True)
def namespaces_usable() -> None:
    if os.geteuid() != 0:
        pytest.skip("up --netns needs root")
    probe = f"mp-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` does not work here: {made.stderr.strip()}")
    ip_command("netns", "del", probe)


def table(output: str) -> dict[str, tuple[str, str]]:
    """service -> (IP, NETNS) from the instance table `up` prints."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("SERVICE"))
    assert lines[start].split()[:4] == ["SERVICE", "VERSION", "IP", "NETNS"]
    rows = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        service, _version, ip, namespace = line.split()[:4]
        rows[service] = (ip, namespace)
    return rows


def get_inside(namespace: str, port: int, host: str, path: str = "/") -> HttpReply:
    """GET from inside `namespace` to its own 127.0.0.1:`port`."""
    conn = http.client.HTTPConnection(netns.LOCAL_IP, port, timeout=5)
    conn.sock = netns.connect(namespace, (netns.LOCAL_IP, port), 5)
    try:
        conn.request("GET", path, headers={"Host": host})
        reply = conn.getresponse()
        return HttpReply(reply.status, dict(reply.getheaders()), reply.read())
    finally:
        conn.close()


def refused(ip: str, port: int, namespace: str | None = None) -> bool:
    """True when a connection to `ip:port`, from the host or from inside `namespace`, is
    answered with a reset (nothing listens there)."""
    try:
        if namespace:
            netns.connect(namespace, (ip, port), 2).close()
        else:
            socket.create_connection((ip, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def pids_in(namespace: str) -> dict[int, str]:
    """pid -> command line of every process in `namespace`."""
    found = {}
    for pid in map(int, ip_command("netns", "pids", namespace).split()):
        with contextlib.suppress(OSError):
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return found


def leftovers(run_id: int) -> list[str]:
    """Namespaces and links (bridge, veths) of the `up` with pid `run_id` that still exist."""
    namespaces = [line.split()[0] for line in ip_command("netns", "list").splitlines()]
    links = [line.split()[0].split("@")[0] for line in ip_command("-br", "link").splitlines()]
    mine = (f"mp{run_id}-", f"mp{run_id}v")
    return [n for n in namespaces + links if n.startswith(mine) or n == f"mpbr{run_id}"]


@pytest.fixture
def up(mesh_env: MeshEnv) -> Iterator[Proc]:
    """`up --netns` of MESH, ready; afterwards it is stopped and, should it have failed to,
    whatever it left behind is removed."""
    mesh = mesh_env.write_mesh(MESH)
    proc = mesh_env.processes.start("up", [MESHPILOT, "up", "--netns", str(mesh)], cwd=mesh_env.tmp)
    try:
        wait_for(lambda: "ready; Ctrl-C" in proc.log(), 60, message="up to be ready", procs=[proc])
        yield proc
    finally:
        mesh_env.processes.stop(proc)
        for name in leftovers(proc.pid):
            kind = "netns" if name.startswith(f"mp{proc.pid}-") else "link"
            subprocess.run(["ip", kind, "del", name], capture_output=True)


def test_up_netns_isolates_instances_and_removes_everything_on_stop(up: Proc) -> None:
    rows = table(up.log())
    assert set(rows) == {"frontend", "backend"}
    (front_ip, front_ns), (back_ip, back_ns) = rows["frontend"], rows["backend"]
    assert front_ns != back_ns
    started = {}
    for namespace in (front_ns, back_ns):
        inside = pids_in(namespace)
        assert any(" sidecar " in cmd for cmd in inside.values()), inside
        assert any(APP in cmd for cmd in inside.values()), inside
        started |= inside

    # Through the sidecars, across namespaces, with the callers' mTLS identities.
    reply = get_inside(front_ns, OUTBOUND, "backend")
    assert reply.status == 200 and reply.json()["service"] == "backend"
    assert get_inside(back_ns, OUTBOUND, "backend").status == 403  # only frontend may call
    assert get_inside(back_ns, OUTBOUND, "frontend").status == 200

    # From the host and from the other instance, only the inbound (mTLS) port is there.
    for ip, other_ns in ((front_ip, back_ns), (back_ip, front_ns)):
        for where in (None, other_ns):
            open_ports = [p for p in (8080, 9090, ADMIN, OUTBOUND) if not refused(ip, p, where)]
            assert open_ports == [], (ip, where)
        socket.create_connection((ip, INBOUND), timeout=2).close()

    os.kill(up.pid, signal.SIGINT)
    wait_for(lambda: not up.alive(), 20, message="up to stop")
    assert up.returncode == 0
    assert leftovers(up.pid) == []
    assert [pid for pid in started if pid_alive(pid)] == []
