"""`serve --admin-token-file`: the admin API shows the whole mesh, so only a bearer of the token
reads it; the health check stays open for probes."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from click.testing import CliRunner

from meshpilot.admin.status import fetch_proxies
from meshpilot.cli import main
from tests.support.controlplane import running_control_plane

MESH = "mesh: demo\nservices: {reviews: {port: 9080}}\n"
TOKEN = "s3cret-admin-token"


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as err:
        with err:
            assert err.headers["WWW-Authenticate"] == "Bearer"
            return err.code


async def test_every_path_but_the_health_check_needs_the_token(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path, MESH, admin_token=TOKEN) as plane:
        base = f"http://{plane.admin.address}"
        for path in ("/proxies", "/mesh", "/metrics", "/config_dump?node=x"):
            assert await asyncio.to_thread(get, base + path) == 401, path
            assert await asyncio.to_thread(get, base + path, "wrong") == 401, path
        assert await asyncio.to_thread(get, base + "/proxies", TOKEN) == 200
        assert await asyncio.to_thread(get, base + "/healthz") == 200
        assert await asyncio.to_thread(fetch_proxies, plane.admin.address, TOKEN) == []


async def test_status_sends_the_token_from_its_file(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    async with running_control_plane(tmp_path, MESH, admin_token=TOKEN) as plane:
        address = plane.admin.address
        with_token = ["status", "--admin", address, "--admin-token-file", str(token_file)]
        shown = await asyncio.to_thread(CliRunner().invoke, main, with_token)
        refused = await asyncio.to_thread(CliRunner().invoke, main, ["status", "--admin", address])
    assert shown.exit_code == 0 and "no proxies connected" in shown.output
    assert refused.exit_code == 1 and "401" in refused.stderr


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "admin-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    result = CliRunner().invoke(main, ["status", "--admin-token-file", str(token_file)])
    assert result.exit_code == 1
    assert "readable by other users" in result.stderr
