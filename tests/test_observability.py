"""The Grafana files of docker-compose.yml are well formed: the provisioned datasource and
dashboard provider, and every dashboard's panels, which all query that datasource with PromQL
that Prometheus' own checker (`promtool`) accepts. (e2e/test_prometheus.py runs each query
against a real Prometheus scraping a real mesh.)"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.dashboards import (
    DASHBOARDS,
    PROVISIONING,
    VARIABLE,
    dashboards,
    expressions,
    label_values_queries,
    panels,
    substitute,
)

ROOT = Path(__file__).parent.parent
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range"}


def provisioned(kind: str) -> dict[str, Any]:
    (path,) = sorted((PROVISIONING / kind).glob("*.yml"))
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == 1, path
    return doc


def datasource_uid() -> str:
    (datasource,) = provisioned("datasources")["datasources"]
    assert datasource["type"] == "prometheus" and datasource["isDefault"] is True
    return str(datasource["uid"])


def test_the_dashboard_provider_loads_the_dashboards_directory_as_grafana_mounts_it() -> None:
    (provider,) = provisioned("dashboards")["providers"]
    assert provider["type"] == "file"
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounted = dict(str(v).split(":", 1) for v in grafana["volumes"])
    assert mounted[f"./{DASHBOARDS.relative_to(ROOT)}"] == f"{provider['options']['path']}:ro"
    assert mounted[f"./{PROVISIONING.relative_to(ROOT)}"] == "/etc/grafana/provisioning:ro"
    assert dashboards(), f"no dashboard in {DASHBOARDS}"


@pytest.mark.parametrize("path", sorted(dashboards()), ids=lambda p: p.name)
def test_every_panel_queries_the_provisioned_datasource(path: Path) -> None:
    dashboard = dashboards()[path]
    uid = datasource_uid()
    assert dashboard["uid"] and dashboard["title"]
    ids = Counter(panel["id"] for panel in panels(dashboard))
    assert [i for i, n in ids.items() if n > 1] == []
    queried = [p for p in panels(dashboard) if p["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
            assert target["expr"].strip(), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


@pytest.mark.parametrize("path", sorted(dashboards()), ids=lambda p: p.name)
def test_every_query_is_promql_that_promtool_accepts(path: Path, tmp_path: Path) -> None:
    """Each expression, its variables given a value, as a recording rule for `promtool check
    rules`; only the dashboard's own variables and Grafana's built-in ones are used."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (apt-get install prometheus)"
    dashboard = dashboards()[path]
    defined = set(label_values_queries(dashboard)) | GRAFANA_BUILTINS
    values = dict.fromkeys(defined - GRAFANA_BUILTINS, "reviews") | {
        name: "1m" for name in GRAFANA_BUILTINS
    }
    rules = [
        {"record": f"dashboard:query_{n}", "expr": substitute(expr, values)}
        for n, expr in enumerate(expressions(dashboard))
    ]
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": path.stem, "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_substitute_fills_every_variable_form_and_refuses_an_unknown_one() -> None:
    values = {"service": "reviews", "__rate_interval": "1m"}
    text = 'rate(x{a=~"$service", b="${service}", c="[[service]]"}[$__rate_interval])'
    assert substitute(text, values) == 'rate(x{a=~"reviews", b="reviews", c="reviews"}[1m])'
    assert VARIABLE.search(substitute(text, values)) is None
    with pytest.raises(KeyError, match="version"):
        substitute('x{v="$version"}', values)
