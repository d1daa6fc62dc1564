"""Reading a real Envoy's admin API: state, config dump, cluster membership, stats."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from harness.wait import envoy_state, http_get, http_json, wait_for

HEALTHY_EDS_STATES = {"HEALTHY", "UNKNOWN"}  # Envoy routes to UNKNOWN hosts too


@dataclass(frozen=True)
class Host:
    """One upstream host of a cluster as Envoy sees it."""

    address: str
    port: int
    healthy: bool
    health: dict[str, Any]
    stats: dict[str, int]
    priority: int = 0  # its locality's priority in the caller's assignment (0: first choice)

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


class EnvoyAdmin:
    """Typed helpers over `http://IP:15000`."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def state(self) -> str:
        return envoy_state(self.url)

    def server_info(self) -> dict[str, Any]:
        info: dict[str, Any] = http_json(f"{self.url}/server_info")
        return info

    def config_dump(self, resource: str | None = None, *, include_eds: bool = False) -> Any:
        """`/config_dump`, optionally one resource kind (e.g. "dynamic_active_clusters")."""
        query = []
        if resource:
            query.append(f"resource={quote(resource)}")
        if include_eds:
            query.append("include_eds")
        suffix = f"?{'&'.join(query)}" if query else ""
        return http_json(f"{self.url}/config_dump{suffix}")

    def dynamic_listeners(self) -> dict[str, Any]:
        """Active listeners by name, as the full Listener JSON."""
        dump = self.config_dump("dynamic_listeners")
        return {
            item["name"]: item["active_state"]["listener"]
            for item in dump.get("configs", [])
            if "active_state" in item
        }

    def dynamic_clusters(self) -> dict[str, Any]:
        """Active dynamic clusters by name, as the full Cluster JSON."""
        dump = self.config_dump("dynamic_active_clusters")
        return {item["cluster"]["name"]: item["cluster"] for item in dump.get("configs", [])}

    def route_configs(self) -> dict[str, Any]:
        """Dynamic route configurations by name."""
        dump = self.config_dump("dynamic_route_configs")
        return {
            item["route_config"]["name"]: item["route_config"]
            for item in dump.get("configs", [])
            if "route_config" in item
        }

    def clusters(self) -> dict[str, list[Host]]:
        """Every cluster's hosts from `/clusters?format=json`, with health and counters."""
        data = http_json(f"{self.url}/clusters?format=json")
        return {
            status["name"]: [_host(h) for h in status.get("host_statuses", [])]
            for status in data.get("cluster_statuses", [])
        }

    def healthy_hosts(self, cluster: str) -> list[str]:
        """`ip:port` of the hosts of `cluster` that Envoy would route to, sorted."""
        return sorted(h.endpoint for h in self.clusters().get(cluster, []) if h.healthy)

    def wait_hosts(self, cluster: str, endpoints: Iterable[str], timeout: float = 10.0) -> None:
        """Wait until exactly `endpoints` (ip:port) are the healthy members of `cluster`."""
        wanted = sorted(endpoints)
        wait_for(
            lambda: sorted(self.healthy_hosts(cluster)) == wanted,
            timeout,
            message=f"{cluster} members to be {wanted}",
            ignore=(OSError,),
        )

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        """Counters and gauges (histograms and text readouts are left out)."""
        suffix = f"?filter={quote(filter_regex)}" if filter_regex else ""
        text = http_get(f"{self.url}/stats{suffix}").text
        return _parse_stats(text)

    def stat(self, name: str) -> int:
        """One counter or gauge; 0 when Envoy has not created it (yet)."""
        return self.stats(f"^{_regex_escape(name)}$").get(name, 0)


def _host(status: dict[str, Any]) -> Host:
    address = status["address"].get("socket_address", {})
    health = status.get("health_status", {})
    failed = any(value is True for key, value in health.items() if key.startswith("failed"))
    healthy = health.get("eds_health_status", "HEALTHY") in HEALTHY_EDS_STATES and not failed
    stats = {s["name"]: int(s.get("value", 0)) for s in status.get("stats", [])}
    port = int(address.get("port_value", 0))
    priority = int(status.get("priority", 0))
    return Host(address.get("address", ""), port, healthy, health, stats, priority)


def _parse_stats(text: str) -> dict[str, int]:
    stats: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            stats[name] = int(value)
    return stats


def _regex_escape(name: str) -> str:
    return "".join(f"\\{c}" if c in ".^$*+?()[]{}|\\" else c for c in name)
