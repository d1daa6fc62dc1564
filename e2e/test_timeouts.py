"""Timeouts in a real Envoy: the route's deadline, and per-try deadlines that make retries.

The app's `/delay/<ms>` answers late on purpose. Elapsed times are asserted with loose bounds
that still tell a working timeout (about the configured time) from none (the app's full delay).
"""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import reviews_mesh, start_reviews_mesh

V1_CLUSTER = "outbound|9080|v1|reviews"
SLACK = 0.6  # seconds a loaded machine may add to a timeout before the answer arrives
EARLY = 0.01  # Envoy arms timers from its event loop's last clock reading: up to a few ms early
TIMEOUT_ROUTES = """
              - name: slow
                match: {path_prefix: /slow}
                to: [{subset: v1}]
                timeout: 300ms
              - name: per-try
                match: {path_prefix: /per-try}
                to: [{subset: v1}]
                timeout: 5s
                retries: {attempts: 2, on: [5xx], per_try_timeout: 200ms, backoff: {base: 10ms}}
              - name: capped
                match: {path_prefix: /capped}
                to: [{subset: v1}]
                timeout: 500ms
                retries: {attempts: 5, on: [5xx], per_try_timeout: 200ms, backoff: {base: 10ms}}"""


def test_the_504_on_timeout(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, TIMEOUT_ROUTES))
    with page.client() as client:
        in_time = client.get("reviews", "/slow/delay/50")
        late = client.get("reviews", "/slow/delay/2000")
    print(f"route timeout 300 ms: 504 after {late.elapsed:.3f} s")
    assert in_time.status == 200
    assert late.status == 504, late.text
    assert 0.3 - EARLY <= late.elapsed < 0.3 + SLACK, late.elapsed


def test_a_per_try_timeout_retries_and_the_route_timeout_caps_all_tries(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, TIMEOUT_ROUTES))

    def per_try_timeouts() -> int:
        return page.admin.stat(f"cluster.{V1_CLUSTER}.upstream_rq_per_try_timeout")

    with page.client() as client:
        in_time = client.get("reviews", "/per-try/delay/50")
        before = per_try_timeouts()
        three_tries = client.get("reviews", "/per-try/delay/2000")
        timed_out_tries = per_try_timeouts() - before
        capped = client.get("reviews", "/capped/delay/2000")
    print(
        f"3 tries of 200 ms: {three_tries.elapsed:.3f} s; capped at 500 ms: {capped.elapsed:.3f} s"
    )
    assert in_time.status == 200
    assert three_tries.status == 504, three_tries.text
    assert timed_out_tries == 3
    assert 3 * 0.2 - EARLY <= three_tries.elapsed < 3 * 0.2 + SLACK, three_tries.elapsed
    assert capped.status == 504, capped.text
    assert 0.5 - EARLY <= capped.elapsed < 0.5 + SLACK, capped.elapsed  # not 6 tries of 200 ms
