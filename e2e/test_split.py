"""Weighted canary split between subsets, through real Envoy sidecars."""

from __future__ import annotations

from collections import Counter

from harness.mesh import MeshEnv
from harness.stats import binomial_bounds
from meshes import reviews_mesh, start_reviews_mesh

SAMPLES = 600


def test_a_75_25_split_sends_a_quarter_to_v2(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(75, 25))
    with page.client() as client:
        replies = [client.get("reviews", "/split") for _ in range(SAMPLES)]
    assert {r.status for r in replies} == {200}
    versions = Counter(r.json()["version"] for r in replies)
    low, high = binomial_bounds(SAMPLES, 0.25)
    assert low <= versions["v2"] <= high, versions
    assert versions["v1"] + versions["v2"] == SAMPLES
