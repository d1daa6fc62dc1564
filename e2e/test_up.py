"""`meshpilot up`: a whole mesh from one command, live edits, crash restarts, clean Ctrl-C."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.client import LoadGenerator, MeshClient
from harness.mesh import APP, MESHPILOT, MeshEnv, accepts_connections
from harness.processes import Proc
from harness.wait import http_json, wait_for

RUN = (
    f"{sys.executable} {APP} --ip {{ip}} --port {{app_port}} "
    "--service {service} --version {version}"
)
MESH = """
mesh: up-test
services:
  frontend:
    port: 8080
    run:
      - {command: "RUN", version: v1}
  backend:
    port: 9090
    subsets: {v1: {version: v1}, v2: {version: v2}}
    run:
      - {command: "RUN", version: v1, replicas: 2}
      - {command: "RUN", version: v2}
    routes:
      - name: split
        to: [{subset: v1, weight: V1}, {subset: v2, weight: V2}]
"""
SIDECAR_PORTS = (15000, 15001, 15006, 8080)
PLANE_PORTS = (18000, 18001)


def mesh_text(v1: int, v2: int) -> str:
    return MESH.replace("RUN", RUN).replace("V1", str(v1)).replace("V2", str(v2))


@dataclass(frozen=True)
class Row:
    service: str
    version: str
    ip: str


def replicas(output: str) -> list[Row]:
    """The instance table `up` prints: SERVICE VERSION IP ..."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("SERVICE"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        service, version, ip = line.split()[:3]
        rows.append(Row(service, version, ip))
    return rows


def plane_ip(output: str) -> str:
    line = next(line for line in output.splitlines() if line.startswith("control plane: xds "))
    return line.split()[3].rsplit(":", 1)[0]


def pids_running(text: str) -> list[int]:
    """Processes whose command line contains `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def start_up(
    mesh_env: MeshEnv, env: dict[str, str] | None = None, options: tuple[str, ...] = ()
) -> tuple[Proc, list[Row], str]:
    mesh = mesh_env.write_mesh(mesh_text(100, 0))
    argv = [MESHPILOT, "up", *options, str(mesh)]
    up = mesh_env.processes.start("up", argv, cwd=mesh_env.tmp, env=env)
    wait_for(lambda: "ready; Ctrl-C" in up.log(), 60, message="up to be ready", procs=[up])
    return up, replicas(up.log()), plane_ip(up.log())


def test_up_runs_the_mesh_applies_edits_restarts_crashes_and_stops_cleanly(
    mesh_env: MeshEnv,
) -> None:
    up, rows, plane = start_up(mesh_env)
    frontend = next(r for r in rows if r.service == "frontend")
    v1 = {r.ip for r in rows if r.service == "backend" and r.version == "v1"}
    assert len(rows) == 4 and len(v1) == 2

    with MeshClient(frontend.ip) as client:
        answered = [client.get("backend").json() for _ in range(20)]
    assert {a["version"] for a in answered} == {"v1"}
    assert {a["ip"] for a in answered} == v1

    with LoadGenerator(MeshClient(frontend.ip), "backend") as load:
        mesh_env.write_mesh(mesh_text(0, 100))
        load.wait_effective(lambda r: r.ok and r.body["version"] == "v2")
    assert load.failures() == [], load.summary()

    victim_ip = sorted(v1)[0]
    crashed = pids_running(f"{APP} --ip {victim_ip} ")
    assert len(crashed) == 1
    os.kill(crashed[0], signal.SIGKILL)
    wait_for(
        lambda: (now := pids_running(f"{APP} --ip {victim_ip} ")) and now != crashed,
        15,
        message="the crashed replica to be restarted",
    )
    wait_for(lambda: accepts_connections(victim_ip, 8080), 10, ignore=(OSError,))
    assert "exited with status -9; restarting" in up.log()

    os.kill(up.pid, signal.SIGINT)
    wait_for(lambda: not up.alive(), 20, message="up to stop")
    assert up.returncode == 0
    every_ip = [plane, *(r.ip for r in rows)]
    assert [p for ip in every_ip for p in pids_running(f"{ip} ")] == []
    listening = [
        f"{ip}:{port}"
        for ip in every_ip
        for port in (*SIDECAR_PORTS, *PLANE_PORTS)
        if _accepts(ip, port)
    ]
    assert listening == []


def _accepts(ip: str, port: int) -> bool:
    try:
        return accepts_connections(ip, port, timeout=0.5)
    except OSError:
        return False


def path_without_meshpilot() -> str:
    """$PATH without the directory of the meshpilot under test, as after `make demo`."""
    here = str(Path(MESHPILOT).parent)
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep) if d != here)


def banner_status_command(output: str) -> list[str]:
    """The `status` command the banner's "try:" lines suggest."""
    suggestions = output.split("\ntry:\n", 1)[1]
    line = next(line for line in suggestions.splitlines() if " status --admin " in line)
    suggested = line.split("   and   ")[0].strip()
    return shlex.split(suggested)


def test_up_tells_of_a_rejected_save_with_a_status_command_that_works_off_path(
    mesh_env: MeshEnv,
) -> None:
    env = {"PATH": path_without_meshpilot()}
    up, rows, plane = start_up(mesh_env, env)
    assert plane.startswith("127.200."), up.log()  # up's own range, from its first block
    block = plane.removesuffix(".1")
    assert [r.ip for r in rows] == [f"{block}.{host}" for host in range(2, 6)], up.log()
    status = banner_status_command(up.log())
    assert status == [MESHPILOT, "status", "--admin", f"{plane}:18001"], up.log()
    serving = http_json(f"http://{plane}:18001/mesh")["version"]

    mesh = mesh_env.write_mesh(mesh_text(50, 20))
    told = f"{mesh} not applied; version {serving} keeps serving"
    wait_for(lambda: told in up.log(), 10, message="up to tell of the rejected save", procs=[up])
    problem = f"{mesh}:15:13: services.backend.routes[0].to: weights add up to 70"
    assert problem in up.log().split(told)[0].splitlines()[-1], up.log()
    shown = subprocess.run(status, capture_output=True, text=True, timeout=30, env=env)
    assert shown.returncode == 0, shown
    assert shown.stdout.startswith(
        f"the last save of the mesh file was rejected; version {serving} keeps serving:\n"
        f"  {problem}"
    ), shown.stdout

    mesh_env.write_mesh(mesh_text(0, 100))
    wait_for(lambda: f"{mesh} applied: version " in up.log(), 10, message="the good save")
