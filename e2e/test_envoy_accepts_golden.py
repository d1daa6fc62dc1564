"""Real Envoy accepts every golden case's output (`envoy --mode validate`): listeners (policies,
rate limits, access logs, tcp), clusters (policies, TLS, DNS) and route tables.

A resource Envoy rejects is NACKed, and a shared route table for every sidecar at once, so
each golden case's output is checked by the binary itself: the outbound listener gets its
scopes and route tables inline instead of over SRDS and RDS, and EDS clusters become static
ones without members (validation needs neither a control plane nor endpoints). Envoy checks
field constraints and builds everything, which catches what a schema cannot (e.g. a back-off
max below its base). The SDS cluster that mTLS contexts refer to is the one a secure
sidecar's bootstrap has.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from meshpilot.bootstrap import sds_cluster
from meshpilot.runner.envoy import envoy_binary

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
OUTPUTS = sorted(GOLDEN.glob("*/*.json"))


def offline_cluster(cluster: dict[str, Any]) -> dict[str, Any]:
    result = {k: v for k, v in cluster.items() if k not in ("@type", "edsClusterConfig")}
    if result.get("type") == "EDS":
        result.update(type="STATIC", loadAssignment={"clusterName": result["name"]})
    return result


def inline_routes(
    listener: dict[str, Any], tables: dict[str, Any], scopes: list[dict[str, Any]]
) -> dict[str, Any]:
    """The listener with its HTTP connection managers' RDS and SRDS references replaced by the
    tables and scopes they name, inline."""
    result: dict[str, Any] = json.loads(
        json.dumps({k: v for k, v in listener.items() if k != "@type"})
    )
    for chain in result.get("filterChains", []):
        for network_filter in chain.get("filters", []):
            manager = network_filter.get("typedConfig", {})
            if "rds" in manager:
                manager["routeConfig"] = tables[manager.pop("rds")["routeConfigName"]]
            if "scopedRoutes" in manager:
                scoped = manager["scopedRoutes"]
                del scoped["scopedRds"]
                scoped["scopedRouteConfigurationsList"] = {
                    "scopedRouteConfigurations": [inline_scope(s, tables) for s in scopes]
                }
    return result


def inline_scope(scope: dict[str, Any], tables: dict[str, Any]) -> dict[str, Any]:
    inlined = {k: v for k, v in scope.items() if k not in ("@type", "routeConfigurationName")}
    return {**inlined, "routeConfiguration": tables[scope["routeConfigurationName"]]}


def bootstrap(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    tables = {r["name"]: {k: v for k, v in r.items() if k != "@type"} for r in rendered["rds"]}
    scopes = rendered["srds"]
    # A sidecar: a table per service, a scope per Host it answers; a gateway: its one table.
    assert len(scopes) >= len(tables) > 0 or (not scopes and len(tables) == 1)
    return {
        "node": {"id": "golden", "cluster": "golden"},  # SDS subscriptions need a node
        "static_resources": {
            "listeners": [inline_routes(lst, tables, scopes) for lst in rendered["lds"]],
            "clusters": [
                *(offline_cluster(c) for c in rendered["cds"]),
                sds_cluster("/run/meshpilot/sds.sock"),
            ],
        },
    }


@pytest.mark.parametrize("output", OUTPUTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_envoy_accepts_the_rendered_resources(output: Path, tmp_path: Path) -> None:
    config = tmp_path / "bootstrap.json"
    config.write_text(json.dumps(bootstrap(json.loads(output.read_text()))))
    argv = [envoy_binary(), "--mode", "validate", "-c", str(config), "-l", "error"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
