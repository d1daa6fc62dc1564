"""The CLI's HTTP client of meshpilot's own endpoints (`status --admin`, `logs`/`top --mixer`):
`http://` accepted, and every failure one line that names the fix when the port is a known one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner, Result

from meshpilot.admin import client
from meshpilot.admin.client import MIXER_HTTP, get_json, http_address
from meshpilot.admin.http import HttpServer, Reply
from meshpilot.cli import main
from meshpilot.controlplane import ControlPlane
from meshpilot.errors import MeshpilotError
from meshpilot.runner.addresses import LoopbackAllocator

MESH = "mesh: demo\nservices: {reviews: {port: 9080}}\n"


@pytest.fixture
def ip() -> Iterator[str]:
    """A loopback IP of this test's own, so it may bind meshpilot's default ports."""
    allocator = LoopbackAllocator()
    yield allocator.ip()
    allocator.release()


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(main, list(argv))


async def invoke_off_loop(*argv: str) -> Result:
    return await asyncio.to_thread(invoke, *argv)


def one_line_error(result: Result) -> str:
    """The error a failed command printed: exactly one line, no traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("given", "address"),
    [
        ("10.0.0.1:18082", "10.0.0.1:18082"),
        ("http://10.0.0.1:18082", "10.0.0.1:18082"),
        ("http://10.0.0.1:18082/", "10.0.0.1:18082"),
        ("mixer.local:80/", "mixer.local:80"),
        ("[::1]:18001", "[::1]:18001"),
    ],
)
def test_an_address_may_be_given_as_an_http_url(given: str, address: str) -> None:
    assert http_address(given, MIXER_HTTP) == address


@pytest.mark.parametrize(
    ("given", "complaint"),
    [
        ("10.0.0.1", "expected HOST:PORT, e.g. 127.0.0.1:18082"),
        ("10.0.0.1:http", "expected HOST:PORT"),
        ("https://10.0.0.1:18082", "speaks plain http://"),
        ("http://10.0.0.1:18082/metrics", "without a path"),
    ],
)
def test_a_bad_address_is_named_with_its_option(given: str, complaint: str) -> None:
    with pytest.raises(MeshpilotError, match=r"^--mixer ") as raised:
        http_address(given, MIXER_HTTP)
    assert complaint in str(raised.value)


@asynccontextmanager
async def http_server(address: str) -> AsyncIterator[HttpServer]:
    routes = {
        "/echo": lambda query: Reply.json(query),
        "/text": lambda _: Reply(200, b"ok\n"),
    }
    server = HttpServer(address, routes)  # type: ignore[arg-type]
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_json_comes_back_with_the_query_that_was_given(ip: str) -> None:
    async with http_server(f"{ip}:8000"):
        query = {"service": "a b", "status": 403, "path": None}
        got = await asyncio.to_thread(
            get_json, MIXER_HTTP, f"http://{ip}:8000/", "/echo", query=query
        )
    assert got == {"service": "a b", "status": "403"}


async def test_an_answer_that_is_not_json_is_one_clear_error(ip: str) -> None:
    async with http_server(f"{ip}:8000"):
        with pytest.raises(MeshpilotError) as raised:
            await asyncio.to_thread(get_json, MIXER_HTTP, f"{ip}:8000", "/text")
    assert str(raised.value) == (
        f"the mixer's HTTP API at {ip}:8000 answered GET /text with something not JSON"
    )


async def test_the_admin_port_given_for_the_mixer_names_the_mixer_option(ip: str) -> None:
    async with http_server(f"{ip}:18001"):
        result = await invoke_off_loop("logs", "--mixer", f"{ip}:18001")
    assert one_line_error(result) == (
        f"error: the mixer's HTTP API at {ip}:18001 answered 404 to GET /logs; {ip}:18001 is "
        "the control plane admin API's port, the mixer's HTTP API is on --mixer "
        "(default 127.0.0.1:18082)"
    )


async def test_the_mixer_grpc_port_given_for_its_http_api_names_the_fix(ip: str) -> None:
    server = grpc.aio.server()
    server.add_insecure_port(f"{ip}:18081")
    await server.start()
    try:
        result = await invoke_off_loop("top", "--mixer", f"{ip}:18081")
    finally:
        await server.stop(None)
    assert one_line_error(result) == (
        f"error: cannot reach the mixer's HTTP API at {ip}:18081: it answers HTTP/2 (gRPC), not "
        f"HTTP/1.1; {ip}:18081 is the mixer's gRPC port, the mixer's HTTP API is on --mixer "
        "(default 127.0.0.1:18082)"
    )


async def test_status_on_the_tls_xds_port_names_the_admin_option(ip: str, tmp_path: Path) -> None:
    """A secure control plane: its xDS port speaks TLS, its admin API plain HTTP."""
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(MESH)
    plane = ControlPlane(mesh, f"{ip}:18000", f"{ip}:18001", state_dir=tmp_path, tls=True)
    await plane.start()
    try:
        wrong = await invoke_off_loop("status", "--admin", f"{ip}:18000")
        right = await invoke_off_loop("status", "--admin", f"http://{ip}:18001/")
    finally:
        await plane.stop()
    error = one_line_error(wrong)
    assert error.startswith(f"error: cannot reach the control plane admin API at {ip}:18000: ")
    assert error.endswith(
        f"; {ip}:18000 is the control plane's xDS port, the control plane admin API is on "
        "--admin (default 127.0.0.1:18001)"
    )
    assert right.exit_code == 0 and right.output == "no proxies connected\n"


def test_a_refused_connection_on_a_known_port_names_the_fix(ip: str) -> None:
    assert one_line_error(invoke("status", "--admin", f"{ip}:18082")) == (
        f"error: cannot reach the control plane admin API at {ip}:18082: connection refused; "
        f"{ip}:18082 is the mixer's HTTP port, the control plane admin API is on --admin "
        "(default 127.0.0.1:18001)"
    )


def test_a_host_name_that_does_not_resolve_is_one_line() -> None:
    error = one_line_error(invoke("logs", "--mixer", "http://no-such-host.invalid:18082"))
    assert error.startswith(
        "error: cannot reach the mixer's HTTP API at no-such-host.invalid:18082: cannot resolve"
    )


def test_a_port_that_never_answers_times_out_in_one_line(
    ip: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "TIMEOUT_S", 0.2)
    with socket.create_server((ip, 8000)):  # accepts (backlog) but never answers
        error = one_line_error(invoke("status", "--admin", f"{ip}:8000"))
    assert error == (
        f"error: cannot reach the control plane admin API at {ip}:8000: no answer within 0.2 s"
    )


async def test_an_admin_api_that_wants_a_token_says_which_option_gives_it(ip: str) -> None:
    server = HttpServer(f"{ip}:8001", {"/proxies": lambda _: Reply.json([])}, token="secret")
    await server.start()
    try:
        result = await invoke_off_loop("status", "--admin", f"{ip}:8001")
    finally:
        await server.stop()
    assert one_line_error(result) == (
        f"error: the control plane admin API at {ip}:8001 answered 401 to GET /proxies "
        "(give --admin-token-file)"
    )
