"""`meshpilot diff`: what the control plane sent a proxy against what its Envoy has in force,
resource by resource (like `istioctl proxy-status POD`).

Both sides are already in one canonical JSON form (proxy_dump). What is left are the fields that
Envoy fills in when it rebuilds an endpoint assignment from its hosts (a weight of 1, the
default over-provisioning factor, runtime health): those are brought to one form here. Endpoint
assignments are compared for the clusters the sidecar discovers over EDS; a static cluster's
members are part of the cluster itself."""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from meshpilot.admin.proxy_dump import (
    BY_NAME,
    ConfigAccess,
    ProxyConfig,
    Resource,
    control_plane_config,
    find_node,
    sidecar_admin,
    sidecar_config,
)

CONTROL_PLANE, SIDECAR = "control plane", "sidecar"
COMPARED = ("cluster", "listener", "scoped-route", "route", "endpoint")
_DEFAULT_OVERPROVISIONING = 140


@dataclass(frozen=True)
class ResourceDiff:
    """One resource that is not the same on both sides: `lines` is a unified diff, or empty
    when the resource is `only_in` one side."""

    kind: str
    name: str
    only_in: str | None = None
    lines: tuple[str, ...] = ()

    def format(self) -> str:
        if self.only_in is not None:
            return f"only in {self.only_in}: {self.kind} {self.name}"
        return "\n".join(self.lines)


def comparable_endpoints(assignment: Resource) -> Resource:
    """An endpoint assignment without what Envoy adds when it dumps one: each endpoint's and
    locality's default weight, the default policy, empty health-check settings, health."""
    result = copy.deepcopy(assignment)
    for group in result.get("endpoints", []):
        if group.get("load_balancing_weight") == 0:
            del group["load_balancing_weight"]
        for lb_endpoint in group.get("lb_endpoints", []):
            lb_endpoint.pop("health_status", None)
            lb_endpoint.setdefault("load_balancing_weight", 1)
            endpoint = lb_endpoint.get("endpoint", {})
            if endpoint.get("health_check_config") == {}:
                del endpoint["health_check_config"]
        group.get("lb_endpoints", []).sort(key=_sort_key)
    policy = result.get("policy", {})
    if policy.get("overprovisioning_factor") == _DEFAULT_OVERPROVISIONING:
        del policy["overprovisioning_factor"]
    if policy == {}:
        result.pop("policy", None)
    return result


def _sort_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def eds_names(clusters: list[Resource]) -> set[str]:
    """The endpoint assignments the clusters ask for over EDS."""
    return {
        c.get("eds_cluster_config", {}).get("service_name") or c["name"]
        for c in clusters
        if c.get("type") == "EDS"
    }


def _by_name(config: ProxyConfig, kind: str) -> dict[str, Resource]:
    resources = config.get(kind, [])
    if kind == "endpoint":
        wanted = eds_names(config.get("cluster", []))
        return {
            r["cluster_name"]: comparable_endpoints(r)
            for r in resources
            if r["cluster_name"] in wanted
        }
    return {BY_NAME[kind].resource_name(r): r for r in resources}


def diff_configs(control_plane: ProxyConfig, sidecar: ProxyConfig) -> list[ResourceDiff]:
    """Every resource that differs or is on one side only, kind by kind, sorted by name."""
    return [d for kind in COMPARED for d in _diff_kind(kind, control_plane, sidecar)]


def _diff_kind(
    kind: str, control_plane: ProxyConfig, sidecar: ProxyConfig
) -> Iterator[ResourceDiff]:
    expected, actual = _by_name(control_plane, kind), _by_name(sidecar, kind)
    for name in sorted(expected.keys() | actual.keys()):
        if name not in actual:
            yield ResourceDiff(kind, name, only_in=CONTROL_PLANE)
        elif name not in expected:
            yield ResourceDiff(kind, name, only_in=SIDECAR)
        elif expected[name] != actual[name]:
            yield ResourceDiff(kind, name, lines=_unified(kind, name, expected[name], actual[name]))


def _unified(kind: str, name: str, expected: Resource, actual: Resource) -> tuple[str, ...]:
    return tuple(
        line.rstrip("\n")
        for line in difflib.unified_diff(
            _lines(expected), _lines(actual), f"{CONTROL_PLANE} {kind} {name}",
            f"{SIDECAR} {kind} {name}", lineterm="",
        )
    )  # fmt: skip


def _lines(resource: Resource) -> list[str]:
    return json.dumps(resource, indent=2, sort_keys=True).splitlines()


def compared_count(control_plane: ProxyConfig, sidecar: ProxyConfig) -> int:
    """How many resources were compared (a name on either side counts once)."""
    return sum(
        len(_by_name(control_plane, kind).keys() | _by_name(sidecar, kind).keys())
        for kind in COMPARED
    )


def format_report(node_id: str, diffs: list[ResourceDiff], compared: int) -> str:
    """The diffs, then the resources on one side only, then a one-line verdict."""
    changed = [d for d in diffs if d.only_in is None]
    one_sided = [d for d in diffs if d.only_in is not None]
    body = [d.format() for d in (*changed, *one_sided)]
    if not diffs:
        return f"{node_id}: in sync ({compared} resources compared)"
    verdict = (
        f"{node_id}: out of sync: changed {len(changed)}, "
        f"only in control plane {sum(d.only_in == CONTROL_PLANE for d in one_sided)}, "
        f"only in sidecar {sum(d.only_in == SIDECAR for d in one_sided)}"
    )
    return "\n".join([*body, verdict])


def print_diff(node: str, access: ConfigAccess) -> int:
    """Print the report; exit status 0 when in sync, 1 when anything differs."""
    found = find_node(access.admin, node, access.token)
    sidecar = sidecar_config(sidecar_admin(found, access.envoy_admin), found.node_id)
    control_plane = control_plane_config(access.admin, found, access.token)
    diffs = diff_configs(control_plane, sidecar)
    for note in found.unsynced:
        print(f"note: {note}")
    print(format_report(found.node_id, diffs, compared_count(control_plane, sidecar)))
    return 1 if diffs else 0
