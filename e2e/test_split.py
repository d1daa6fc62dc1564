"""Weighted canary split between subsets, through real Envoy sidecars."""

from __future__ import annotations

from collections import Counter

from harness.mesh import Instance, MeshEnv
from harness.stats import binomial_bounds
from meshes import reviews_mesh, reviews_with, start_reviews_mesh

SAMPLES = 600
UNNAMED_CANARY = reviews_with(
    """
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - to: [{subset: v1, weight: 75}, {subset: v2, weight: 25}]
    """
)


def assert_quarter_to_v2(page: Instance) -> None:
    """SAMPLES requests from `page` to reviews: all answered, v2's share within the binomial
    bounds of 25% for that sample size."""
    with page.client() as client:
        replies = [client.get("reviews", "/split") for _ in range(SAMPLES)]
    assert {r.status for r in replies} == {200}
    versions = Counter(r.json()["version"] for r in replies)
    low, high = binomial_bounds(SAMPLES, 0.25)
    assert low <= versions["v2"] <= high, versions
    assert versions["v1"] + versions["v2"] == SAMPLES


def test_a_75_25_split_sends_a_quarter_to_v2(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(75, 25))
    assert_quarter_to_v2(page)


def test_a_route_without_a_name_splits_traffic_too(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, UNNAMED_CANARY)
    assert_quarter_to_v2(page)
