"""Header routes and unknown hosts through the outbound listener."""

from __future__ import annotations

from harness.mesh import MeshEnv
from meshes import reviews_mesh, start_reviews_mesh

TESTERS_TO_V2 = """
              - name: testers-to-v2
                match: {headers: {x-user: tester}, methods: [GET]}
                to: [{subset: v2}]"""


def test_a_header_route_wins_over_the_default_split(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0, TESTERS_TO_V2))
    with page.client() as client:
        testers = {
            client.get("reviews", "/", **{"x-user": "tester"}).json()["version"] for _ in range(20)
        }
        others = {
            client.get("reviews", "/", **{"x-user": "someone"}).json()["version"] for _ in range(20)
        }
        posted = client.request("reviews", "/", method="POST", headers={"x-user": "tester"})
    assert testers == {"v2"}
    assert others == {"v1"}
    assert posted.json()["version"] == "v1"  # the route only matches GET


def test_host_with_port_is_routed_and_an_unknown_host_gets_404(mesh_env: MeshEnv) -> None:
    page, _, _ = start_reviews_mesh(mesh_env, reviews_mesh(100, 0))
    with page.client() as client:
        with_port = client.get("reviews:9080", "/")
        unknown = client.get("no-such-service", "/")
        other_port = client.get("reviews:1234", "/")  # reviews' route table, but not its name
    assert with_port.status == 200 and with_port.json()["version"] == "v1"
    assert unknown.status == 404
    assert other_port.status == 404
