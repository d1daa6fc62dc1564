"""Local rate limits at the destination's sidecar: the 429s past the bucket, through real Envoy."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from harness.client import MeshClient, Result
from harness.mesh import Instance, MeshEnv
from harness.wait import HttpReply
from meshes import live_edit, reviews_with, start_called


def service_limit(per_second: int, burst: int) -> str:
    return reviews_with(f"rate_limit: {{requests_per_second: {per_second}, burst: {burst}}}")


ROUTE_LIMIT = reviews_with(
    """
    rate_limit: {requests_per_second: 1, burst: 10}
    routes:
      - name: limited
        match: {path_prefix: /limited}
        rate_limit: {requests_per_second: 1, burst: 3}
      - name: rest
    """
)


def start(env: MeshEnv, mesh: str) -> Instance:
    """A productpage caller and one reviews instance (one sidecar, so one bucket)."""
    return start_called(env, mesh, ["reviews"])[0]


def burst(client: MeshClient, path: str, count: int) -> tuple[list[HttpReply], float]:
    """`count` requests back to back; the replies and how long the burst took."""
    started = time.monotonic()
    replies = [client.get("reviews", path) for _ in range(count)]
    return replies, time.monotonic() - started


def check_bucket(replies: list[HttpReply], elapsed: float, burst: int, per_second: int) -> None:
    """A full bucket lets `burst` through, plus what refills during the burst; the rest get 429
    from Envoy with the x-ratelimit-* headers, not from the app."""
    allowed = [r for r in replies if r.status == 200]
    limited = [r for r in replies if r.status == 429]
    statuses = [r.status for r in replies]
    assert len(allowed) + len(limited) == len(replies), statuses
    assert burst <= len(allowed) <= burst + math.floor(per_second * elapsed), (statuses, elapsed)
    assert statuses[:burst] == [200] * burst, statuses
    for reply in limited:
        assert reply.headers.get("x-ratelimit-limit") == str(burst), reply.headers
        assert "x-ratelimit-remaining" in reply.headers, reply.headers
        assert "x-app-service" not in reply.headers  # answered by the sidecar, not the app


def test_the_429s_past_the_bucket(mesh_env: MeshEnv) -> None:
    page = start(mesh_env, service_limit(5, 5))
    with page.client() as client:
        replies, elapsed = burst(client, "/", 15)
    check_bucket(replies, elapsed, burst=5, per_second=5)
    assert replies[0].headers.get("x-ratelimit-limit") == "5"  # allowed replies carry them too


def test_a_route_limit_has_its_own_bucket_and_only_affects_its_route(mesh_env: MeshEnv) -> None:
    page = start(mesh_env, ROUTE_LIMIT)
    with page.client() as client:
        on_route, route_elapsed = burst(client, "/limited/x", 8)
        elsewhere, service_elapsed = burst(client, "/other", 14)
    check_bucket(on_route, route_elapsed, burst=3, per_second=1)
    # The route's requests did not draw on the service's bucket: all 10 of it are left.
    check_bucket(elsewhere, service_elapsed, burst=10, per_second=1)


def test_a_rate_limit_edit_applies_within_a_second_and_fails_no_request(mesh_env: MeshEnv) -> None:
    """The edit replaces the destination's inbound listener: Envoy drains the old one (requests
    in flight finish, connections close after their reply) while new connections get the new
    bucket, so callers see the new limit and no error."""
    page = start(mesh_env, service_limit(1000, 1000))

    def limit_is(value: str) -> Callable[[Result], bool]:
        return lambda r: r.headers is not None and r.headers.get("x-ratelimit-limit") == value

    # No failure: a 429 is an answer.
    load, saved, effective = live_edit(mesh_env, page, service_limit(5, 5), limit_is("5"), 20)
    assert all(limit_is("1000")(r) for r in load.results if r.sent_at < saved)
    assert {r.status for r in load.since(effective)} == {200, 429}, load.summary()
    assert effective - saved < 1.0, f"took {effective - saved:.3f} s"


def test_four_per_minute_lets_four_through_then_429s(mesh_env: MeshEnv) -> None:
    """Istio's local rate limit task: 4 tokens refilled every minute; a fifth request at once
    finds the bucket empty (the next token is 15 s away)."""
    page = start(mesh_env, reviews_with("rate_limit: {rate: 4 per 1m}"))
    with page.client() as client:
        statuses = [client.get("reviews", "/").status for _ in range(6)]
    assert statuses == [200] * 4 + [429] * 2, statuses


def test_a_limit_keyed_by_a_header_gives_each_user_a_bucket(mesh_env: MeshEnv) -> None:
    """ann exhausts her bucket and gets 429s while bob's bucket is untouched; requests without
    the header share a bucket of their own."""
    page = start(mesh_env, reviews_with("rate_limit: {rate: 3 per 1m, key: {header: x-user}}"))
    with page.client() as client:
        ann = [client.get("reviews", "/", **{"x-user": "ann"}).status for _ in range(5)]
        bob = [client.get("reviews", "/", **{"x-user": "bob"}).status for _ in range(3)]
        anonymous = [client.get("reviews", "/").status for _ in range(4)]
        ann_again = client.get("reviews", "/", **{"x-user": "ann"})
    assert ann == [200] * 3 + [429] * 2, ann
    assert bob == [200] * 3, bob
    assert anonymous == [200] * 3 + [429], anonymous
    assert ann_again.status == 429 and ann_again.headers.get("x-ratelimit-limit") == "3"
