"""`meshpilot top --watch` and `meshpilot logs --follow` against a real mixer fed by real
sidecars: live figures (denied calls in the 4xx column), every new request printed once, Ctrl-C
a clean exit; and a wrong port is one line that names the right option."""

from __future__ import annotations

import signal
import subprocess

from harness.mesh import MESHPILOT, Instance, MeshEnv, Mixer
from harness.processes import Proc
from harness.wait import wait_for

MESH = """
mesh: live
telemetry: {access_log: true}
services:
  frontend: {port: 8080}
  reviews:
    port: 9080
    subsets: {v1: {version: v1}}
policies:
  - name: no-admin
    service: reviews
    action: deny
    to: {paths: [/admin*]}
"""
STOP_TIMEOUT = 10.0


def start_mesh(mesh_env: MeshEnv) -> tuple[Mixer, Instance]:
    """The control plane, the mixer and frontend -> reviews with real sidecars."""
    _, mixer = mesh_env.start_with_mixer(mesh_env.write_mesh(MESH))
    frontend = mesh_env.start_instance("frontend", "v1")
    reviews = mesh_env.start_instance("reviews", "v1")
    frontend.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])
    return mixer, frontend


def interrupt(proc: Proc) -> int:
    """Ctrl-C, as a terminal sends it; the exit status."""
    proc.popen.send_signal(signal.SIGINT)
    return proc.popen.wait(STOP_TIMEOUT)


def frames(output: str) -> list[list[list[str]]]:
    """`top --watch` output as its refreshes, each a list of table rows split into cells."""
    shown = output.split("Every ")[1:]
    return [[line.split() for line in frame.splitlines()[2:] if line] for frame in shown]


def test_top_watch_refreshes_with_denied_calls_as_4xx_until_ctrl_c(mesh_env: MeshEnv) -> None:
    mixer, frontend = start_mesh(mesh_env)
    watch = mesh_env.processes.start(
        "top-watch", [MESHPILOT, "top", "--mixer", f"http://{mixer.http}/", "--watch", "0.2"]
    )
    wait_for(lambda: frames(watch.log()), 10, message="a first table", procs=[watch])
    assert frames(watch.log())[0] == [["no", "requests", "in", "the", "last", "60", "s"]]

    with frontend.client() as client:
        assert [client.get("reviews", "/reviews/1").status for _ in range(4)] == [200] * 4
        assert [client.get("reviews", "/admin/x").status for _ in range(3)] == [403] * 3

    def edge_after_traffic() -> list[str] | None:
        rows = frames(watch.log())[-1]
        return rows[1] if len(rows) > 1 and rows[1][2] == "7" else None

    edge = wait_for(edge_after_traffic, 15, message="7 requests in a refresh", procs=[watch])
    header = ["SOURCE", "DESTINATION", "REQUESTS", "RPS", "4XX", "5XX", "P50", "MS", "P99", "MS"]
    assert frames(watch.log())[-1][0] == header
    assert edge[:2] == ["frontend", "reviews"] and edge[4:6] == ["42.9%", "0.0%"]

    assert mixer.proc is not None
    mesh_env.processes.stop(mixer.proc)  # a lost mixer is shown, the view goes on

    def lost() -> bool:
        return frames(watch.log())[-1][0][:3] == ["error:", "cannot", "reach"]

    wait_for(lost, 10, message="the lost mixer shown", procs=[watch])
    assert interrupt(watch) == 0
    assert "Traceback" not in watch.log() and "Aborted" not in watch.log()


def log_lines(proc: Proc) -> list[list[str]]:
    """`logs --follow` output so far, each line split into its cells."""
    return [line.split() for line in proc.log().splitlines() if line.strip()]


def test_logs_follow_prints_each_new_request_once_with_filters(mesh_env: MeshEnv) -> None:
    mixer, frontend = start_mesh(mesh_env)
    with frontend.client() as client:
        assert client.get("reviews", "/before").status == 200
    wait_for(lambda: len(mixer.logs(service="reviews")) == 2, 10, message="2 entries")

    argv = [MESHPILOT, "logs", "--follow", "--mixer", mixer.http, "--status", "200"]
    follow = mesh_env.processes.start("logs-follow", argv)
    wait_for(lambda: len(log_lines(follow)) == 3, 10, message="header + 2", procs=[follow])
    assert log_lines(follow)[0][:3] == ["TIME", "REPORTER", "SOURCE"]

    sent = 12
    with frontend.client() as client:
        for i in range(sent):
            assert client.get("reviews", f"/reviews/{i}").status == 200
            assert client.get("reviews", "/admin/x").status == 403  # filtered out
        assert client.get("reviews", "/last").status == 200

    # Each request is reported by the caller's sidecar and by the callee's, each sidecar in
    # order: once both have reported the last request, every earlier line is in.
    def last_reported() -> bool:
        return sum(cells[6] == "/last" for cells in log_lines(follow)) == 2

    wait_for(last_reported, 15, message="both lines of the last request", procs=[follow])
    new = log_lines(follow)[3:]
    assert len(new) == 2 * (sent + 1)
    seen = sorted((cells[6], cells[1]) for cells in new)  # (path, reporter)
    paths = [*(f"/reviews/{i}" for i in range(sent)), "/last"]
    assert seen == sorted((p, r) for p in paths for r in ("destination", "source"))
    assert {cells[7] for cells in new} == {"200"}

    assert interrupt(follow) == 0
    assert "Traceback" not in follow.log()


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHPILOT, *argv], capture_output=True, text=True, timeout=30)


def test_a_grpc_port_given_for_an_http_one_is_one_line_naming_the_option(
    mesh_env: MeshEnv,
) -> None:
    control_plane, mixer = mesh_env.start_with_mixer(mesh_env.write_mesh(MESH))
    mixer_grpc = run("logs", "--mixer", mixer.grpc)
    xds = run("status", "--admin", control_plane.xds)
    for result, option, default in (
        (mixer_grpc, "--mixer", "127.0.0.1:18082"),
        (xds, "--admin", "127.0.0.1:18001"),
    ):
        assert result.returncode == 1 and result.stdout == ""
        (error,) = result.stderr.splitlines()  # one line, no traceback
        assert error.startswith("error: ") and error.endswith(f"is on {option} (default {default})")
    assert f"{mixer.grpc} is the mixer's gRPC port" in mixer_grpc.stderr
    assert f"{control_plane.xds} is the control plane's xDS port" in xds.stderr
    assert run("logs", "--mixer", f"http://{mixer.http}/").stdout == "no requests recorded\n"
