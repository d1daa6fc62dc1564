"""A real Prometheus scrapes the control plane's admin `/metrics` and the mixer's `/metrics`
(with the repository's scrape configuration) while real sidecars carry traffic: PromQL answers
with what was sent, and every query of the Grafana dashboard has data."""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

from harness.mesh import Instance, MeshEnv
from harness.prometheus import Prometheus, Sample, start_prometheus
from harness.wait import wait_for

from meshpilot.runner.addresses import LoopbackAllocator
from tests.support.dashboards import dashboards, expressions, label_values_queries, substitute

MESH = """
mesh: prometheus
defaults: {retries: {attempts: 0}}  # one request, one count: a retried 503 would count thrice
telemetry:
  access_log: true
services:
  frontend: {port: 8080}
  reviews:
    port: 9080
    subsets: {v1: {version: v1}}
  ratings:
    port: 9080
    subsets: {v1: {version: v1}}
"""
# One batch of requests from the frontend: (destination, path, status answered).
BATCH = [
    *[("reviews", "/reviews/1", 200)] * 4,
    *[("reviews", "/status/404", 404)] * 2,
    ("reviews", "/status/503", 503),
    *[("ratings", "/ratings/1", 200)] * 3,
]
JOBS = {"controlplane": "meshpilot-controlplane", "mixer": "meshpilot-mixer"}
WINDOW = 60  # seconds: the [1m] of the queries below
DASHBOARD_VALUES = {"service": "reviews", "__rate_interval": "1m"}


def send_batch(frontend: Instance) -> Counter[str]:
    """BATCH through the frontend's sidecar; requests sent per destination service."""
    with frontend.client() as client:
        answered = [(dest, client.get(dest, path).status) for dest, path, _ in BATCH]
    assert answered == [(dest, status) for dest, _, status in BATCH]
    return Counter(dest for dest, _, _ in BATCH)


def by_destination(samples: list[Sample]) -> dict[str, float]:
    return {s["metric"]["destination_service"]: float(s["value"][1]) for s in samples}


def by_series(samples: list[Sample]) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in samples}


def scraped_gauge(prometheus: Prometheus, name: str) -> list[tuple[str, str, float]]:
    """Each series of `name` as (job, instance, value)."""
    return [
        (s["metric"]["job"], s["metric"]["instance"], float(s["value"][1]))
        for s in prometheus.query(name)
    ]


def wait_counted(prometheus: Prometheus, sent: Counter[str]) -> None:
    """Until Prometheus has scraped every request sent, as counted by both reporters."""
    for reporter in ("source", "destination"):
        expr = f'sum by (destination_service) (mesh_requests_total{{reporter="{reporter}"}})'
        wait_for(
            lambda expr=expr: by_destination(prometheus.query(expr)) == dict(sent),
            20,
            message=f"Prometheus to count {dict(sent)} ({reporter})",
            procs=[prometheus.proc],
        )


def converged_once(prometheus: Prometheus, mesh_env: MeshEnv, mesh: Path) -> None:
    """A live edit of the mesh file, until Prometheus has scraped its convergence time."""
    counted = "meshpilot_config_convergence_seconds_count"
    before = sum(float(s["value"][1]) for s in prometheus.query(counted))
    mesh_env.write_mesh(MESH + "  details: {port: 9080}\n", mesh.name)
    wait_for(
        lambda: prometheus.query(f"{counted} > {before}"),
        20,
        message="Prometheus to scrape a config convergence time",
        procs=[prometheus.proc],
    )


def test_prometheus_scrapes_the_mesh_and_answers_with_the_traffic_sent(
    mesh_env: MeshEnv, loopback: LoopbackAllocator, tmp_path: Path
) -> None:
    mesh = mesh_env.write_mesh(MESH)
    control_plane, mixer = mesh_env.start_with_mixer(mesh)
    frontend = mesh_env.start_instance("frontend", "v1")
    reviews = mesh_env.start_instance("reviews", "v1")
    ratings = mesh_env.start_instance("ratings", "v1")
    frontend.admin.wait_hosts("outbound|9080||reviews", [reviews.inbound])
    frontend.admin.wait_hosts("outbound|9080||ratings", [ratings.inbound])
    targets = {JOBS["controlplane"]: control_plane.admin, JOBS["mixer"]: mixer.http}
    prometheus = start_prometheus(
        mesh_env.processes, tmp_path / "prometheus", loopback.ip(), targets
    )
    prometheus.wait_targets_up(set(targets))

    # Two batches, the second after Prometheus saw the first: the rate over the window has an
    # increase to show, not only a series that appeared with its final value.
    first = send_batch(frontend)
    wait_counted(prometheus, first)
    sent = first + send_batch(frontend)
    wait_counted(prometheus, sent)
    converged_once(prometheus, mesh_env, mesh)
    at = time.time()
    # Every query below is evaluated at `at`: once each target was scraped after it, no sample up
    # to `at` is still on its way in (under load a scrape can land after a first query ran).
    wait_for(
        lambda: prometheus.query(f"min(timestamp(up)) > {at:.3f}"),
        10,
        message="a scrape of every target after the queries' time",
    )

    rates = by_destination(
        prometheus.query("sum by (destination_service) (rate(mesh_requests_total[1m]))", at)
    )
    assert set(rates) == {"reviews", "ratings"}  # the frontend received nothing: no series
    assert_rates_match_increases(prometheus, at, rates, first)

    connected = len(control_plane.proxies())
    assert connected == 3  # the three sidecars
    wait_for(
        lambda: (
            scraped_gauge(prometheus, "meshpilot_connected_proxies")
            == [(JOBS["controlplane"], control_plane.admin, connected)]
        ),
        10,
        message=f"meshpilot_connected_proxies == {connected} in Prometheus",
    )
    assert_dashboard_has_data(prometheus, at)


def assert_rates_match_increases(
    prometheus: Prometheus, at: float, rates: dict[str, float], first: Counter[str]
) -> None:
    """rate() is the window's increase, extrapolated, over its length. Prometheus extrapolates a
    series' delta (last - first sample in the window) by at most 1.1 average scrape intervals
    at each end (`extrapolatedRate`), so with n samples: delta <= increase <= delta *
    (1 + 2.2 / (n - 1)). The delta holds the whole second batch (the window begins before it
    and the first batch is already counted at its start)."""
    window = f"mesh_requests_total[{WINDOW}s]"
    delta = by_series(prometheus.query(f"max_over_time({window}) - min_over_time({window})", at))
    count = by_series(prometheus.query(f"count_over_time({window})", at))
    increase = by_series(prometheus.query(f"increase({window})", at))
    assert set(increase) == set(delta) == set(count)
    per_destination: Counter[str] = Counter()
    for series, value in increase.items():
        bound = 1 + 2.2 / (count[series] - 1)
        assert delta[series] <= value <= delta[series] * bound, (series, value, delta[series])
        labels = dict(series)
        if labels["reporter"] == "destination":
            per_destination[labels["destination_service"]] += int(delta[series])
    for service, rate in rates.items():
        increases = sum(v for s, v in increase.items() if ("destination_service", service) in s)
        assert abs(rate * WINDOW - increases) < 1e-6, (service, rate, increases)
        assert per_destination[service] >= first[service]  # the second batch, the same size


def assert_dashboard_has_data(prometheus: Prometheus, at: float) -> None:
    """Every panel query of every provisioned dashboard, with its variables filled in, returns
    a number (not only NaN: each rate, share and quantile has requests or changes to show);
    each variable's label_values lists the services that received traffic."""
    for path, dashboard in dashboards().items():
        for name, (selector, label) in label_values_queries(dashboard).items():
            match = {"match[]": selector} if selector else {}
            values = prometheus.api(f"label/{label}/values", **match)
            assert values == ["ratings", "reviews"], (path.name, name, values)
        empty = [
            expr
            for expr in expressions(dashboard)
            if not any(
                not math.isnan(float(sample["value"][1]))
                for sample in prometheus.query(substitute(expr, DASHBOARD_VALUES), at)
            )
        ]
        assert not empty, f"{path.name}: queries without data: {empty}"
