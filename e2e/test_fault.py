"""Fault injection in a real Envoy: the caller's sidecar aborts or delays requests of a route.

An aborted request never leaves the caller's sidecar, which the app's `/__seen` count shows.
Many-request tests ask the app for `/status/204`: an answer without a body is one write, which
keeps each request at a few milliseconds.
"""

from __future__ import annotations

from harness.mesh import Instance, MeshEnv
from harness.stats import binomial_bounds
from harness.wait import http_json
from meshes import reviews_mesh, start_reviews_mesh

SAMPLES = 400
# Envoy arms timers from the time its event loop last read the clock, so a delay may end a
# millisecond or two early as measured by the client.
TIMER_SLACK = 0.01
FAULT_ROUTES = """
              - name: teapot
                match: {path_prefix: /abort}
                to: [{subset: v1}]
                fault: {abort: {status: 418}}
              - name: slowed
                match: {path_prefix: /slowed}
                to: [{subset: v1}]
                fault: {delay: {fixed: 200ms}}
              - name: some-aborted
                match: {path_prefix: /some}
                to: [{subset: v1}]
                fault: {abort: {status: 503, percent: 12.5}, delay: {fixed: 1ms, percent: 0.5}}"""


def seen(instance: Instance) -> int:
    """Requests with `Host: reviews` the instance's app has received so far."""
    hosts: dict[str, int] = http_json(f"{instance.app_url}/__seen")["hosts"]
    return hosts.get("reviews", 0)


def test_the_injected_abort_status_and_a_fixed_delay(mesh_env: MeshEnv) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, FAULT_ROUTES))
    with page.client() as client:
        aborted = [client.get("reviews", "/abort") for _ in range(20)]
        after_aborts = seen(v1)
        delayed = [client.get("reviews", "/slowed") for _ in range(5)]
        after_delays = seen(v1)
    assert [r.status for r in aborted] == [418] * 20
    assert after_aborts == 0  # the app never saw an aborted request
    assert [r.status for r in delayed] == [200] * 5
    assert after_delays == 5  # a delayed request goes through
    assert min(r.elapsed for r in delayed) >= 0.2 - TIMER_SLACK, [r.elapsed for r in delayed]


def test_an_abort_percentage_aborts_that_share_of_requests(mesh_env: MeshEnv) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, FAULT_ROUTES))
    with page.client() as client:
        statuses = [client.get("reviews", "/some/status/204").status for _ in range(SAMPLES)]
    aborted = statuses.count(503)
    low, high = binomial_bounds(SAMPLES, 0.125)
    assert low <= aborted <= high, f"{aborted} of {SAMPLES} aborted, expected {low:.0f}..{high:.0f}"
    assert statuses.count(204) == SAMPLES - aborted
    assert seen(v1) == SAMPLES - aborted
