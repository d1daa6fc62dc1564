"""A real Prometheus (Debian's /usr/bin/prometheus) for a test: the repository's scrape
configuration (deploy/prometheus/prometheus.yml) with the test's addresses, its storage in the
test's directory, and its HTTP API."""

from __future__ import annotations

import shutil
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.processes import Proc, Processes
from harness.wait import http_json, wait_for, wait_http_ok
from tests.support.dashboards import PROMETHEUS_CONFIG

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PORT = 9090
START_TIMEOUT = 30.0

Sample = dict[str, Any]  # one element of a query's `result`: {"metric": {...}, "value": [t, v]}


def scrape_config(targets: Mapping[str, str], scrape_interval: str) -> dict[str, Any]:
    """The repository's configuration with each job's target replaced by `targets[job]`."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = scrape_interval
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets), f"{PROMETHEUS_CONFIG} has jobs {sorted(jobs)}"
    for name, target in targets.items():
        jobs[name]["static_configs"] = [{"targets": [target]}]
    return config


@dataclass
class Prometheus:
    proc: Proc
    url: str

    def api(self, path: str, **params: str) -> Any:
        """`/api/v1/<path>`'s `data`; an answer whose status is not success is an error."""
        query = urllib.parse.urlencode(params)
        reply = http_json(f"{self.url}/api/v1/{path}?{query}", timeout=10.0)
        assert reply["status"] == "success", reply
        return reply["data"]

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        """An instant query's vector (at `at`, epoch seconds, else now)."""
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def targets_up(self) -> dict[str, str]:
        """Each active target's job and its health (`up`, `down`, `unknown`)."""
        active = self.api("targets", state="active")["activeTargets"]
        return {t["labels"]["job"]: t["health"] for t in active}

    def wait_targets_up(self, jobs: set[str], timeout: float = 20.0) -> None:
        wait_for(
            lambda: self.targets_up() == dict.fromkeys(jobs, "up"),
            timeout,
            message=f"Prometheus to scrape {sorted(jobs)}",
            procs=[self.proc],
        )


def start_prometheus(
    processes: Processes,
    directory: Path,
    ip: str,
    targets: Mapping[str, str],
    scrape_interval: str = "1s",
) -> Prometheus:
    """Prometheus on `ip:9090` scraping `targets` (job -> HOST:PORT); waits for /-/ready."""
    assert Path(PROMETHEUS).exists(), "prometheus is not installed (apt-get install prometheus)"
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(targets, scrape_interval)))
    argv = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={ip}:{PORT}",
    ]
    proc = processes.start("prometheus", argv, cwd=directory)
    url = f"http://{ip}:{PORT}"
    wait_http_ok(f"{url}/-/ready", START_TIMEOUT, procs=[proc])
    return Prometheus(proc, url)
