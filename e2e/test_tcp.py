"""A TCP connection through the mesh: the caller's outbound TCP listener on its own IP at the
service's port, a weighted split of connections, and the destination's inbound TCP proxy."""

from __future__ import annotations

import socket
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from harness.mesh import Instance, MeshEnv
from harness.stats import binomial_bounds
from harness.wait import wait_for
from meshes import caller_mesh

TCP_ECHO = str(Path(__file__).resolve().parent / "tcp_echo.py")
PORT = 7000
CONNECTIONS = 100


def echo_mesh(v1: int, v2: int) -> str:
    return caller_mesh(
        f"""
        echo:
          port: {PORT}
          protocol: tcp
          subsets:
            v1: {{version: v1}}
            v2: {{version: v2}}
          routes:
            - name: split
              to: [{{subset: v1, weight: {v1}}}, {{subset: v2, weight: {v2}}}]
        """,
        caller="client",
    )


def echo_app(version: str) -> Callable[[str, int], list[str]]:
    def argv(ip: str, port: int) -> list[str]:
        return [sys.executable, TCP_ECHO, "--ip", ip, "--port", str(port), "--version", version]

    return argv


def start_echo_mesh(env: MeshEnv, mesh: str) -> Instance:
    """Control plane, a caller and echo v1 and v2; returns the caller once its TCP listener
    for echo answers."""
    env.start_control_plane(env.write_mesh(mesh))
    caller = env.start_instance("client", "v1")
    v1 = env.start_command_instance("echo", "v1", echo_app("v1"))
    v2 = env.start_command_instance("echo", "v2", echo_app("v2"))
    caller.admin.wait_hosts(f"outbound|{PORT}|v1|echo", [v1.inbound])
    caller.admin.wait_hosts(f"outbound|{PORT}|v2|echo", [v2.inbound])
    wait_for(lambda: exchange(caller.ip), 10, message="echo through the caller", ignore=(OSError,))
    return caller


class Connection:
    """One TCP connection to the caller's listener for echo, as the caller's app would open."""

    def __init__(self, ip: str) -> None:
        self.sock = socket.create_connection((ip, PORT), timeout=5)
        self.lines = self.sock.makefile("rb")

    def send(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\n")
        return self.lines.readline().decode().rstrip("\n")

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def exchange(ip: str, text: str = "ping") -> str:
    """One line over a new connection; the reply says which version answered."""
    conn = Connection(ip)
    try:
        return conn.send(text)
    finally:
        conn.close()


def versions(ip: str, count: int) -> Counter[str]:
    replies = [exchange(ip, f"hello {n}") for n in range(count)]
    assert all(r.split(":", 1)[1].startswith("hello ") for r in replies), replies
    return Counter(r.split(":", 1)[0] for r in replies)


def test_a_tcp_connection_through_the_mesh_is_split_by_weight(mesh_env: MeshEnv) -> None:
    caller = start_echo_mesh(mesh_env, echo_mesh(50, 50))
    seen = versions(caller.ip, CONNECTIONS)
    low, high = binomial_bounds(CONNECTIONS, 0.5)
    assert seen["v1"] + seen["v2"] == CONNECTIONS, seen
    assert low <= seen["v2"] <= high, seen


def test_a_live_weight_edit_moves_new_connections(mesh_env: MeshEnv) -> None:
    caller = start_echo_mesh(mesh_env, echo_mesh(100, 0))
    assert versions(caller.ip, 20) == {"v1": 20}
    before = Connection(caller.ip)
    try:
        assert before.send("before") == "v1:before"
        mesh_env.write_mesh(echo_mesh(0, 100))
        wait_for(lambda: exchange(caller.ip) == "v2:ping", 5, message="new connections to v2")
        assert versions(caller.ip, 20) == {"v2": 20}
        # A connection opened before the edit stays with v1 while its old listener drains.
        assert before.send("after") == "v1:after"
    finally:
        before.close()
