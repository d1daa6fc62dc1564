"""Shared fixtures for the fast tests."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
from collections.abc import AsyncIterator

import pytest

from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.metrics import XdsMetrics
from meshpilot.xds.server import AdsServer
from tests.ads_support import Plane, mesh


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite golden files from current output"
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@contextlib.asynccontextmanager
async def running_plane() -> AsyncIterator[Plane]:
    """An ADS server on a free port for the cache of `mesh()`."""
    cache = SnapshotCache()
    cache.set_mesh(mesh())
    address = f"127.0.0.1:{free_port()}"
    server = AdsServer(cache, XdsMetrics(lambda: len(cache.watches)), address)
    await server.start()
    try:
        yield Plane(cache, address)
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def plane() -> AsyncIterator[Plane]:
    async with running_plane() as running:
        yield running


@pytest.fixture
def now() -> dt.datetime:
    """The test's own clock reading: a CA made during the test is valid from about now on."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
