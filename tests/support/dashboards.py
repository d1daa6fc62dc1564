"""The observability files of docker-compose.yml (deploy/): the Grafana dashboard's PromQL and
Prometheus' scrape configuration, read the same way by the unit tests and the e2e test that
runs them against a real Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEPLOY = Path(__file__).resolve().parent.parent.parent / "deploy"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
# What Grafana puts in place of the dashboard's variables when a test runs its queries.
VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]")


def dashboards() -> dict[Path, dict[str, Any]]:
    """Every dashboard JSON that Grafana's provisioning loads."""
    return {path: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """The PromQL of every panel query, in panel order."""
    return [
        target["expr"]
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with its variables ($name, ${name}, [[name]]) replaced; an unknown one raises."""

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr}")
        return values[name]

    return VARIABLE.sub(value, expr)


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def label_values_queries(dashboard: Mapping[str, Any]) -> dict[str, tuple[str | None, str]]:
    """Each query variable's `label_values(SELECTOR, LABEL)`, split: name -> (selector, label)."""
    found = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.match(text.strip())
        if match is None:
            raise ValueError(f"variable {variable['name']}: not label_values(...): {text}")
        found[variable["name"]] = (match["selector"], match["label"])
    return found
