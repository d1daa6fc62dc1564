"""A fault abort with a gRPC status: the mesh file's form, its problems (placed), and the
fault filter's per-route config it becomes."""

from __future__ import annotations

import pytest

from meshpilot.mesh.load import parse_mesh
from meshpilot.translator.build import build_ir
from meshpilot.translator.envoy.fault import http_fault
from tests.test_mesh_load import problems

GREETER = """\
mesh: m
services:
  greeter:
    port: 50051
    protocol: {protocol}
    routes:
      - fault: {{abort: {abort}}}
"""


def greeter(abort: str, protocol: str = "grpc") -> str:
    """A mesh whose greeter's one route aborts with `abort`, on line 7."""
    return GREETER.format(abort=abort, protocol=protocol)


def test_a_grpc_status_becomes_the_aborts_grpc_status() -> None:
    mesh = build_ir(parse_mesh(greeter("{grpc_status: 14, percent: 50}"), "mesh.yaml"))
    fault = mesh.services[0].routes[0].fault
    assert fault is not None
    assert (fault.abort_grpc_status, fault.abort_status, fault.abort_percent) == (14, None, 50)
    abort = http_fault(fault).abort
    assert abort.WhichOneof("error_type") == "grpc_status"
    assert abort.grpc_status == 14
    assert abort.percentage.numerator == 500_000


def test_an_http_status_stays_an_http_status() -> None:
    mesh = build_ir(parse_mesh(greeter("{status: 503}"), "mesh.yaml"))
    fault = mesh.services[0].routes[0].fault
    assert fault is not None
    abort = http_fault(fault).abort
    assert abort.WhichOneof("error_type") == "http_status"
    assert abort.http_status == 503


@pytest.mark.parametrize(
    ("abort", "protocol", "expected"),
    [
        pytest.param(
            "{status: 503, grpc_status: 14}",
            "grpc",
            "mesh.yaml:7:24: services.greeter.routes[0].fault.abort: give exactly one of "
            "'status' (HTTP) or 'grpc_status' (gRPC)",
            id="both",
        ),
        pytest.param(
            "{percent: 10}",
            "grpc",
            "mesh.yaml:7:24: services.greeter.routes[0].fault.abort: give exactly one of "
            "'status' (HTTP) or 'grpc_status' (gRPC)",
            id="neither",
        ),
        pytest.param(
            "{grpc_status: 0}",
            "grpc",
            "mesh.yaml:7:38: services.greeter.routes[0].fault.abort.grpc_status: must be 1 or "
            "more, got integer 0",
            id="ok-is-no-abort",
        ),
        pytest.param(
            "{grpc_status: 17}",
            "grpc",
            "mesh.yaml:7:38: services.greeter.routes[0].fault.abort.grpc_status: must be 16 or "
            "less, got integer 17",
            id="beyond-the-codes",
        ),
        pytest.param(
            "{grpc_status: 14}",
            "http",
            "mesh.yaml:7:25: services.greeter.routes[0].fault.abort.grpc_status: a gRPC status "
            "answers gRPC calls, and this service's protocol is http; use 'status' or set "
            "'protocol: grpc'",
            id="http-service",
        ),
    ],
)
def test_grpc_abort_problems(abort: str, protocol: str, expected: str) -> None:
    assert problems(greeter(abort, protocol)) == [expected]
