"""Real Envoy accepts every golden case's output (`envoy --mode validate`): listeners (policies,
rate limits, access logs, tcp), clusters (policies, TLS, DNS) and route tables.

A resource Envoy rejects is NACKed, and the shared route table for every sidecar at once, so
each golden case's output is checked by the binary itself: the outbound listener gets the route
table inline instead of over RDS, and EDS clusters become static ones without members
(validation needs neither a control plane nor endpoints). Envoy checks field constraints and
builds everything, which catches what a schema cannot (e.g. a back-off max below its base). The
SDS cluster that mTLS contexts refer to is the one a secure sidecar's bootstrap has.
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


def inline_routes(listener: dict[str, Any], route_config: dict[str, Any]) -> dict[str, Any]:
    """The listener with its HTTP connection manager's RDS reference replaced by the table."""
    result: dict[str, Any] = json.loads(
        json.dumps({k: v for k, v in listener.items() if k != "@type"})
    )
    for chain in result.get("filterChains", []):
        for network_filter in chain.get("filters", []):
            manager = network_filter.get("typedConfig", {})
            if "rds" in manager:
                del manager["rds"]
                manager["routeConfig"] = route_config
    return result


def bootstrap(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (route_config,) = [{k: v for k, v in r.items() if k != "@type"} for r in rendered["rds"]]
    return {
        "node": {"id": "golden", "cluster": "golden"},  # SDS subscriptions need a node
        "static_resources": {
            "listeners": [inline_routes(lst, route_config) for lst in rendered["lds"]],
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
