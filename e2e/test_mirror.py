"""Request mirroring in a real Envoy: a copy of a share of a route's requests goes to a shadow
subset; the caller only ever sees the primary's answer.

Envoy sends the copy with `-shadow` appended to the Host, which is how the shadow app's
`/__seen` tells copies from ordinary requests. Copies are sent in the background, so the
shadow's count is awaited with a deadline.
"""

from __future__ import annotations

from harness.mesh import Instance, MeshEnv
from harness.stats import binomial_bounds
from harness.wait import http_json, wait_for
from meshes import reviews_mesh, start_reviews_mesh

SAMPLES = 400
V2_CLUSTER = "outbound|9080|v2|reviews"
MIRROR_ROUTES = """
              - name: shadowed
                match: {path_prefix: /shadowed}
                to: [{subset: v1}]
                mirror: {subset: v2, percent: 100}
              - name: half-shadowed
                match: {path_prefix: /half}
                to: [{subset: v1}]
                mirror: {subset: v2, percent: 50}"""


def seen(instance: Instance) -> dict[str, int]:
    """Mesh requests the instance's app has received so far, per Host header (the harness's
    readiness probe, sent to the app's own address, left out)."""
    hosts: dict[str, int] = http_json(f"{instance.app_url}/__seen")["hosts"]
    return {host: n for host, n in hosts.items() if host.startswith("reviews")}


def test_the_mirrored_copy_arriving_at_the_shadow_subset(mesh_env: MeshEnv) -> None:
    page, v1, v2 = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, MIRROR_ROUTES))
    count = 50
    with page.client() as client:
        replies = [client.get("reviews", "/shadowed/status/204") for _ in range(count)]
    assert {(r.status, r.headers["x-app-version"]) for r in replies} == {(204, "v1")}
    shadow = wait_for(
        lambda: seen(v2) if seen(v2).get("reviews-shadow", 0) >= count else None,
        5,
        message=f"{count} mirrored requests at v2",
    )
    assert shadow == {"reviews-shadow": count}  # copies only, each once
    assert seen(v1) == {"reviews": count}


def test_a_mirror_percentage_copies_that_share_of_requests(mesh_env: MeshEnv) -> None:
    page, _, v2 = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, MIRROR_ROUTES))
    with page.client() as client:
        versions = [
            client.get("reviews", "/half/status/204").headers["x-app-version"]
            for _ in range(SAMPLES)
        ]
    # Every copy has been started once the last answer is in; wait until each one arrived.
    started = page.admin.stat(f"cluster.{V2_CLUSTER}.upstream_rq_total")
    wait_for(
        lambda: seen(v2).get("reviews-shadow", 0) >= started,
        5,
        message=f"{started} mirrored requests at v2",
    )
    mirrored = seen(v2)["reviews-shadow"]
    low, high = binomial_bounds(SAMPLES, 0.5)
    assert versions == ["v1"] * SAMPLES
    assert mirrored == started
    assert low <= mirrored <= high, (
        f"{mirrored} of {SAMPLES} mirrored, expected {low:.0f}..{high:.0f}"
    )
