"""`meshpilot proxy-config` and `meshpilot diff` against real Envoy sidecars: the control plane's
view and the sidecar's own /config_dump agree after sync, and a route table that Envoy NACKs
leaves the sidecar on its old routes, which `diff` shows (and real traffic confirms)."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from harness.mesh import MESHPILOT, ControlPlane, Instance, MeshEnv
from harness.wait import wait_for
from meshes import block, reviews_mesh, start_reviews_mesh

from meshpilot.xds.types import ROUTE

SOURCES = ("control-plane", "sidecar")
PAGE_CLUSTERS = {
    "inbound|8080||",
    "outbound|9080||productpage",
    "outbound|9080||reviews",
    "outbound|9080|v1|reviews",
    "outbound|9080|v2|reviews",
}
# Passes validation (a valid RE2 pattern) but compiles to a program over Envoy's size limit
# (re2.max_program_size.error_level, 100): Envoy rejects the route table that holds it.
HUGE_REGEX = "/[a-z]{300}"


def meshpilot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESHPILOT, *args], capture_output=True, text=True, timeout=30)


def proxy_config(cp: ControlPlane, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return meshpilot("proxy-config", node, "--admin", cp.admin, *args)


def table(cp: ControlPlane, node: str, type_: str, source: str) -> list[dict[str, str]]:
    """The rows of a `proxy-config` table, each by its header's column names."""
    shown = proxy_config(cp, node, "--type", type_, "--from", source)
    assert shown.returncode == 0, shown
    header, *lines = shown.stdout.splitlines()
    starts = [(m.group(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]
    return [
        {
            name: line[start : starts[i + 1][1] if i + 1 < len(starts) else None].strip()
            for i, (name, start) in enumerate(starts)
        }
        for line in lines
    ]


def as_json(cp: ControlPlane, node: str, source: str) -> dict[str, Any]:
    shown = proxy_config(cp, node, "--from", source, "-o", "json")
    assert shown.returncode == 0, shown
    config: dict[str, Any] = json.loads(shown.stdout)
    return config


def test_proxy_config_from_both_sources(mesh_env: MeshEnv) -> None:
    page, v1, v2 = start_reviews_mesh(mesh_env, reviews_mesh(90, 10))
    cp = mesh_env.control_plane
    assert cp is not None
    cp.wait_synced([page.node_id, v1.node_id, v2.node_id])
    with page.client() as client:
        assert client.get("reviews").status == 200

    for source in SOURCES:
        clusters = {r["NAME"]: r for r in table(cp, page.node_id, "cluster", source)}
        assert clusters.keys() == PAGE_CLUSTERS, (source, clusters)
        assert clusters["outbound|9080|v1|reviews"]["TYPE"] == "EDS"
        assert clusters["outbound|9080|v1|reviews"]["EDS SERVICE"] == "outbound|9080|v1|reviews"
        listeners = {r["NAME"]: r for r in table(cp, page.node_id, "listener", source)}
        assert listeners["outbound"]["ADDRESS:PORT"] == f"{page.ip}:15001", source
        assert listeners["outbound"]["FILTER CHAINS"] == "http -> srds outbound", source
        assert listeners["inbound"]["ADDRESS:PORT"] == f"{page.ip}:15006", source
        routes = {r["ROUTE"]: r for r in table(cp, page.node_id, "route", source)}
        assert routes["reviews/split"]["TO"] == (
            "outbound|9080|v1|reviews 90%, outbound|9080|v2|reviews 10%"
        ), source
        assert "reviews" in routes["reviews/split"]["DOMAINS"].split(",")
        endpoints = {
            (r["CLUSTER"], r["ENDPOINT"]) for r in table(cp, page.node_id, "endpoint", source)
        }
        assert ("outbound|9080|v1|reviews", v1.inbound) in endpoints, source
        assert ("outbound|9080|v2|reviews", v2.inbound) in endpoints, source
        assert ("outbound|9080|v1|reviews", v2.inbound) not in endpoints, source

    secrets = {r["NAME"]: r for r in table(cp, page.node_id, "secret", "sidecar")}
    assert secrets["default"]["SUBJECT"] == "spiffe://e2e/service/productpage", secrets
    assert secrets["ROOTCA"]["TYPE"] == "trust anchor"

    # The same resources, in the same JSON form, from both sides.
    sent, held = as_json(cp, page.node_id, "control-plane"), as_json(cp, page.node_id, "sidecar")
    for kind in ("cluster", "listener", "route", "scoped-route"):
        assert sent[kind] == held[kind], kind
    assert sent["route"][0]["@type"].endswith("RouteConfiguration")

    # Asking the sidecar's Envoy directly needs no control plane, and checks who answers.
    direct = meshpilot(
        "proxy-config", v1.node_id, "--from", "sidecar", "--envoy-admin", f"{page.ip}:15000"
    )
    assert direct.returncode == 1
    assert direct.stderr.strip() == (
        f"error: the Envoy at {page.ip}:15000 is node {page.node_id!r}, not {v1.node_id!r}"
    )

    unknown = proxy_config(cp, "nosuch~127.0.0.1")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    connected = ", ".join(sorted([page.node_id, v1.node_id, v2.node_id]))
    assert unknown.stderr == f"error: no proxy 'nosuch~127.0.0.1'; connected: {connected}\n"


def route_nacked(cp: ControlPlane, node: Instance) -> bool:
    proxy = cp.proxy(node.node_id)
    return proxy is not None and proxy["types"][ROUTE]["status"] == "NACKED"


def test_diff_clean_after_sync_then_shows_a_route_table_envoy_rejected(mesh_env: MeshEnv) -> None:
    page, v1, v2 = start_reviews_mesh(mesh_env, reviews_mesh(100, 0))
    cp = mesh_env.control_plane
    assert cp is not None
    cp.wait_synced([page.node_id, v1.node_id, v2.node_id])

    clean = meshpilot("diff", page.node_id, "--admin", cp.admin)
    assert clean.returncode == 0, clean
    assert re.fullmatch(
        rf"{re.escape(page.node_id)}: in sync \(\d+ resources compared\)\n", clean.stdout
    )

    # Everything to v2, behind a route Envoy rejects: the sidecar keeps its old table.
    extra = f'- name: huge\n  match: {{path_regex: "{HUGE_REGEX}"}}\n  to: [{{subset: v1}}]'
    mesh_env.write_mesh(reviews_mesh(0, 100, block(extra)))
    wait_for(lambda: route_nacked(cp, page), 10, message="the route NACK", ignore=(OSError,))
    with page.client() as client:
        versions = {client.get("reviews").headers["x-app-version"] for _ in range(10)}
    assert versions == {"v1"}, versions

    shown = meshpilot("diff", page.node_id, "--admin", cp.admin)
    assert shown.returncode == 1, shown
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("note: route NACKED: "), shown.stdout
    assert "--- control plane route outbound|reviews" in lines
    assert "+++ sidecar route outbound|reviews" in lines
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    assert any(HUGE_REGEX in line for line in removed), shown.stdout
    assert not any(line.startswith("--- control plane cluster") for line in lines), shown.stdout
    assert lines[-1] == (
        f"{page.node_id}: out of sync: changed 1, only in control plane 0, only in sidecar 0"
    )
