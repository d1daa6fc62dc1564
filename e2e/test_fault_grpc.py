"""A fault abort with a gRPC status in a real Envoy: the caller's sidecar ends the call with
that status (in trailers, as a gRPC server would), and the call never reaches the app."""

from __future__ import annotations

import grpc
import pytest
from harness.mesh import MeshEnv
from meshes import block, caller_mesh
from test_grpc import start, who

FAULTED = caller_mesh(
    block(
        """
        greeter:
          port: 50051
          protocol: grpc
          routes:
            - name: unavailable
              match: {headers: {x-fault: "yes"}}
              fault: {abort: {grpc_status: 14}}
              retries: {attempts: 2, on: [unavailable]}
            - name: default
              retries: {attempts: 0}
        """
    ),
    caller="client",
)
# The app fails the first call with this key (UNAVAILABLE, its own message): it has seen none.
FAIL_ONCE = [("x-fail-times", "1"), ("x-fail-key", "k")]


def test_the_client_sees_the_injected_grpc_status(mesh_env: MeshEnv) -> None:
    caller, _ = start(mesh_env, FAULTED)
    with who(caller) as call:
        aborted = []
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as failed:
                call(b"x", timeout=5, metadata=[("x-fault", "yes"), *FAIL_ONCE])
            aborted.append((failed.value.code(), failed.value.details()))
        with pytest.raises(grpc.RpcError) as first_seen:
            call(b"x", timeout=5, metadata=FAIL_ONCE)
        answered = call(b"y", timeout=5, metadata=FAIL_ONCE)
    # Not retried although the route retries UNAVAILABLE: the abort is the sidecar's own answer.
    assert aborted == [(grpc.StatusCode.UNAVAILABLE, "fault filter abort")] * 3
    assert (first_seen.value.code(), first_seen.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "failing on purpose",
    )
    assert answered == b"greeter:v1:y"
