"""The web console (`/ui`) as an operator sees it, in headless Chromium: the service graph fills
with the mesh's real traffic (a denied call marked), the proxies table shows a NACK's text, and a
rejected save's problems appear, all without a console error; with an admin token, the page asks
for it (or takes it from the URL's fragment) and sends it as a bearer header; a mixer that cannot
be reached is a message in the page."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from harness.browser import Page, chromium
from harness.mesh import MESHPILOT, MeshEnv
from harness.wait import wait_http_ok
from test_status import NACK_ERROR, nacked_clusters

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support (not shipped)

from meshpilot.model import proxies
from tests.support.client import AdsClient, sidecar_node

ARTIFACTS = Path(__file__).resolve().parent.parent / "e2e-artifacts"
MESH = """
mesh: console
telemetry: {access_log: true}
services:
  frontend: {port: 8080}
  reviews:
    port: 9080
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: split
        to: [{subset: v1, weight: 50}, {subset: v2, weight: 50}]
policies:
  - name: no-admin
    service: reviews
    action: deny
    to: {paths: [/admin*]}
"""
REJECTED = MESH.replace("subset: v2, weight", "subset: v9, weight")
TOKEN = "console-e2e-token"


def edge(version: str = "", kind: str = "edge") -> str:
    """A CSS selector of the graph's frontend -> reviews edge (to `version`)."""
    selector = f'svg#graph g.{kind}[data-source="frontend"][data-destination="reviews"]'
    return f'{selector}[data-version="{version}"]' if version else selector


def rps(selector: str) -> str:
    """JavaScript: the requests/s the edge shows, 0 while it is not drawn."""
    return f"Number(document.querySelector('{selector}')?.dataset.rps ?? 0)"


def text_of(selector: str) -> str:
    return f"document.querySelector('{selector}')?.textContent ?? ''"


@pytest.fixture
def page(request: pytest.FixtureRequest, mesh_env: MeshEnv, tmp_path: Path) -> Iterator[Page]:
    """A tab of a headless Chromium; at the end of the test, pass or fail, a screenshot of it in
    e2e-artifacts/ (kept by CI) and in the test's tmp directory."""
    with chromium(mesh_env.processes, tmp_path / "chromium") as page:
        try:
            yield page
        finally:
            name = request.node.name
            page.screenshot(ARTIFACTS / f"{name}.png", tmp_path / f"{name}.png")


async def test_the_console_shows_traffic_denials_nacks_and_rejected_saves(
    mesh_env: MeshEnv, page: Page
) -> None:
    mesh = mesh_env.write_mesh(MESH)
    control_plane, _ = mesh_env.start_with_mixer(mesh)
    frontend = mesh_env.start_instance("frontend", "v1")
    reviews = [mesh_env.start_instance("reviews", v) for v in ("v1", "v2")]
    frontend.admin.wait_hosts("outbound|9080||reviews", [r.inbound for r in reviews])

    page.open(f"{control_plane.admin_url}/ui")
    page.wait_until("document.querySelectorAll('#proxies tbody tr').length === 3")
    with frontend.client() as client:
        assert {client.get("reviews", f"/reviews/{i}").status for i in range(20)} == {200}
        assert {client.get("reviews", "/admin/x").status for _ in range(3)} == {403}
    page.wait_until(f"{rps(edge('v1'))} > 0 && {rps(edge('v2'))} > 0", message="rates")
    denied = page.wait_until(text_of(edge(kind="edge.denied")), message="a denied edge")
    assert "denied" in denied

    await show_a_nack(mesh_env, control_plane.xds, page)

    mesh_env.write_mesh(REJECTED)
    problems = page.wait_until(text_of("#problems"), message="the rejected save's problems")
    assert "unknown subset 'v9'" in problems
    assert page.evaluate(text_of("#applied-version")) == control_plane.mesh()["version"]
    assert page.errors == []


async def show_a_nack(mesh_env: MeshEnv, xds: str, page: Page) -> None:
    """A proxy that rejects its clusters: its row shows NACKED and Envoy's error text."""
    ip = mesh_env.ips.ip()
    fake = proxies.Proxy(f"frontend~{ip}", "frontend", ip, 8080, (("version", "v1"),))
    token = mesh_env.token("frontend", {"version": "v1"}, any_address=True)
    credentials = grpc.ssl_channel_credentials(mesh_env.trust_anchor())
    async with AdsClient(xds, sidecar_node(fake), credentials, token) as client:
        await nacked_clusters(client)
        row = f'#proxies tr[data-node="{fake.node_id}"]'
        shown = await asyncio.to_thread(page.wait_until, text_of(f"{row} td.nack"))
        assert shown == f"CDS: {NACK_ERROR}"
        assert "NACKED" in page.evaluate(text_of(f"{row} td.state.NACKED"))


def test_the_console_asks_for_the_admin_token_and_sends_it(mesh_env: MeshEnv, page: Page) -> None:
    mesh = mesh_env.write_mesh(MESH)
    token_file = mesh_env.tmp / "admin-token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    admin = f"{mesh_env.ips.ip()}:18001"
    argv = [MESHPILOT, "serve", str(mesh), "--insecure", "--admin", admin]
    argv += ["--xds", f"{mesh_env.ips.ip()}:18000", "--admin-token-file", str(token_file)]
    no_mixer = f"{mesh_env.ips.ip()}:18082"  # nothing listens there
    argv += ["--mixer-metrics", no_mixer]
    plane = mesh_env.processes.start("controlplane", argv)
    wait_http_ok(f"http://{admin}/healthz", procs=[plane])

    page.open(f"http://{admin}/ui")
    page.wait_until("!document.getElementById('login').hidden", message="the login form")
    assert page.evaluate(text_of("#applied-version")) == "-"  # nothing shown without it

    page.evaluate(
        f"document.getElementById('token').value = '{TOKEN}';"
        "document.getElementById('login').requestSubmit()"
    )
    applied = page.wait_until(
        "document.getElementById('login').hidden && "
        f"/^[0-9a-f]{{16}}$/.test({text_of('#applied-version')})",
        message="the mesh's version, read with the token",
    )
    assert applied is True

    page.evaluate("sessionStorage.clear()")  # a new tab, given a link with the token
    page.open(f"http://{admin}/ui#token={TOKEN}")
    page.wait_until(
        f"location.hash === '' && /^[0-9a-f]{{16}}$/.test({text_of('#applied-version')})",
        message="the token taken from the fragment, and the fragment cleared",
    )
    mixer = page.wait_until(text_of("#mixer-message"), message="no mixer, said in the page")
    assert f"cannot reach the mixer's HTTP API at {no_mixer}" in mixer
    assert page.errors and all("401" in error for error in page.errors)  # before the token only
