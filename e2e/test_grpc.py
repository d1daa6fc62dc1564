"""A gRPC call through the mesh: HTTP/2 from the caller's sidecar to the destination's and on to
the app, a gRPC retry policy, and rate-limited calls failing with RESOURCE_EXHAUSTED."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from harness.mesh import Instance, MeshEnv
from meshes import block, caller_mesh

GRPC_APP = str(Path(__file__).resolve().parent / "grpc_app.py")
WHO = "/meshpilot.e2e.Echo/Who"


def greeter_mesh(settings: str = "") -> str:
    """A client and the gRPC greeter (retrying `unavailable`), with `settings` of its own."""
    greeter = """
        greeter:
          port: 50051
          protocol: grpc
          routes:
            - name: default
              retries: {attempts: 2, on: [unavailable]}
        """
    return caller_mesh(f"{block(greeter)}\n{block(settings, 2)}", caller="client")


MESH = greeter_mesh()
LIMITED = greeter_mesh("rate_limit: {requests_per_second: 1, burst: 3}")


def grpc_app(service: str, version: str) -> Callable[[str, int], list[str]]:
    def argv(ip: str, port: int) -> list[str]:
        where = ["--ip", ip, "--port", str(port)]
        return [sys.executable, GRPC_APP, *where, "--service", service, "--version", version]

    return argv


def start(env: MeshEnv, mesh: str) -> tuple[Instance, Instance]:
    env.start_control_plane(env.write_mesh(mesh))
    caller = env.start_instance("client", "v1")
    greeter = env.start_command_instance("greeter", "v1", grpc_app("greeter", "v1"))
    caller.admin.wait_hosts("outbound|50051||greeter", [greeter.inbound])
    return caller, greeter


@contextmanager
def who(caller: Instance) -> Iterator[Callable[..., bytes]]:
    """The Who method, called through the caller's outbound listener with `:authority: greeter`
    (plaintext HTTP/2, as an app in the mesh would)."""
    options = [("grpc.default_authority", "greeter"), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(f"{caller.ip}:15001", options=options) as channel:
        yield channel.unary_unary(WHO)


def test_a_grpc_call_through_the_mesh(mesh_env: MeshEnv) -> None:
    caller, _ = start(mesh_env, MESH)
    control_plane = mesh_env.control_plane
    assert control_plane is not None
    with who(caller) as call:
        assert call(b"hello", timeout=5) == b"greeter:v1:hello"
        # The first two attempts fail with UNAVAILABLE; the caller's sidecar retries them.
        retried = call(b"again", timeout=5, metadata=[("x-fail-times", "2"), ("x-fail-key", "a")])
        with pytest.raises(grpc.RpcError) as failed:  # three failures: more than 2 retries
            call(b"no", timeout=5, metadata=[("x-fail-times", "3"), ("x-fail-key", "b")])
    assert retried == b"greeter:v1:again"
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    route = caller.admin.route_configs()["outbound|greeter"]
    greeter = next(h for h in route["virtual_hosts"] if h["name"] == "greeter")
    assert greeter["routes"][0]["route"]["retry_policy"]["retry_on"] == "unavailable"
    control_plane.wait_synced([caller.node_id])  # accepted: ACKed, nothing NACKed


def test_rate_limited_grpc_calls_fail_with_resource_exhausted(mesh_env: MeshEnv) -> None:
    caller, _ = start(mesh_env, LIMITED)
    codes = []
    with who(caller) as call:
        for _ in range(6):
            try:
                call(b"x", timeout=5)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
    # Not UNAVAILABLE, which the caller's sidecar would retry against the limit.
    assert codes[:3] == [grpc.StatusCode.OK] * 3, codes
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[3:], codes
    assert set(codes[3:]) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
