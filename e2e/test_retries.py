"""Retries in a real Envoy: how many tries a request gets, on which answers, and turning them off.

Tries are counted twice: by the caller's sidecar (`upstream_rq_retry` of the cluster) and by the
app (`/__seen`), so a test cannot pass on a statistic that does not mean what it seems to.
"""

from __future__ import annotations

import uuid

from harness.mesh import Instance, MeshEnv
from harness.wait import http_json
from meshes import reviews_mesh, start_reviews_mesh

V1_CLUSTER = "outbound|9080|v1|reviews"
RETRY_ROUTES = """
              - name: flaky
                match: {path_prefix: /flaky}
                to: [{subset: v1}]
                retries: {attempts: 2, on: [5xx], backoff: {base: 10ms, max: 50ms}}
              - name: once
                match: {path_prefix: /once}
                to: [{subset: v1}]
                retries: {attempts: 0}
              - name: teapots
                match: {path_prefix: /teapot}
                to: [{subset: v1}]
                retries: {attempts: 2, on: [], retriable_status_codes: [418]}"""


def seen(instance: Instance) -> int:
    """Requests with `Host: reviews` the instance's app has received so far."""
    hosts: dict[str, int] = http_json(f"{instance.app_url}/__seen")["hosts"]
    return hosts.get("reviews", 0)


class Tries:
    """Counts the tries and retries of the requests sent while it is open."""

    def __init__(self, caller: Instance, callee: Instance) -> None:
        self.caller, self.callee = caller, callee

    def __enter__(self) -> Tries:
        self._retries, self._seen = self._retry_stat(), seen(self.callee)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.retries = self._retry_stat() - self._retries
        self.tries = seen(self.callee) - self._seen

    def _retry_stat(self) -> int:
        return self.caller.admin.stat(f"cluster.{V1_CLUSTER}.upstream_rq_retry")


def failing_twice() -> dict[str, str]:
    """Headers that make the app answer 503 to the first two requests carrying them."""
    return {"x-fail-times": "2", "x-fail-key": uuid.uuid4().hex}


def test_the_retry_that_succeeds_on_attempt_3_and_attempts_0_turning_retries_off(
    mesh_env: MeshEnv,
) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, RETRY_ROUTES))
    with page.client() as client:
        with Tries(page, v1) as flaky:
            succeeded = client.request("reviews", "/flaky", headers=failing_twice())
        with Tries(page, v1) as once:
            failed = client.request("reviews", "/once", headers=failing_twice())
    assert succeeded.status == 200, succeeded.text
    assert (flaky.tries, flaky.retries) == (3, 2)
    assert failed.status == 503
    assert (once.tries, once.retries) == (1, 0)


def test_retriable_status_codes_retry_only_the_listed_codes(mesh_env: MeshEnv) -> None:
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, RETRY_ROUTES))
    with page.client() as client:
        with Tries(page, v1) as listed:
            teapot = client.get("reviews", "/teapot/status/418")
        with Tries(page, v1) as unlisted:
            other = client.get("reviews", "/teapot/status/417")
        with Tries(page, v1) as not_5xx:
            unavailable = client.request("reviews", "/teapot", headers=failing_twice())
    assert teapot.status == 418  # still 418 once the retries are used up
    assert (listed.tries, listed.retries) == (3, 2)
    assert other.status == 417
    assert (unlisted.tries, unlisted.retries) == (1, 0)
    assert unavailable.status == 503  # `on: []`: a 503 is not retried on this route
    assert (not_5xx.tries, not_5xx.retries) == (1, 0)


def failing(times: int) -> dict[str, str]:
    """Headers that make the app answer 503 to the first `times` requests carrying them."""
    return {"x-fail-times": str(times), "x-fail-key": uuid.uuid4().hex}


def test_a_route_without_retries_gets_istios_default_policy(mesh_env: MeshEnv) -> None:
    """The split route sets no `retries` and the mesh no `defaults`: 2 retries, 503 included,
    for a POST too (Envoy re-sends the buffered body, as under Istio)."""
    page, v1, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0))
    with page.client() as client:
        with Tries(page, v1) as once:
            got = client.request("reviews", "/", headers=failing(1))
        with Tries(page, v1) as posted:
            post = client.request("reviews", "/p", method="POST", body="x=1", headers=failing(2))
        with Tries(page, v1) as three:
            failed = client.request("reviews", "/", headers=failing(3))
    assert got.status == 200, got.text
    assert (once.tries, once.retries) == (2, 1)
    assert post.status == 200, post.text
    assert (post.json()["method"], post.json()["body"]) == ("POST", "x=1")
    assert (posted.tries, posted.retries) == (3, 2)
    assert failed.status == 503  # the third 503: two retries used up
    assert (three.tries, three.retries) == (3, 2)
    split = page.admin.route_configs()["outbound|reviews"]["virtual_hosts"][0]["routes"][-1]
    policy = split["route"]["retry_policy"]
    assert policy["retry_on"] == (
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    )
    assert (policy["num_retries"], policy["retriable_status_codes"]) == (2, [503])
