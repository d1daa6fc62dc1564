"""Consistent hashing in a real Envoy: the requests of one user keep landing on one instance.

Three reviews instances behind one service whose load balancer hashes on something the request
carries; the answering instance is the app's `x-app-ip` header.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from harness.client import MeshClient
from harness.mesh import MeshEnv
from meshes import reviews_with, start_called

Send = Callable[[MeshClient, str], str]  # one request as `user`; the answering instance's IP
USERS = [f"user-{n}" for n in range(10)]
REQUESTS_PER_USER = 20


def by_header(client: MeshClient, user: str) -> str:
    return client.get("reviews", "/status/204", **{"x-user": user}).headers["x-app-ip"]


def by_query(client: MeshClient, user: str) -> str:
    return client.get("reviews", f"/status/204?user={user}").headers["x-app-ip"]


@pytest.mark.parametrize(
    ("load_balancer", "send"),
    [
        ("{policy: ring_hash, hash: {header: x-user}}", by_header),
        ("{policy: maglev, hash: {header: x-user}}", by_header),
        ("{policy: maglev, hash: {query_parameter: user}}", by_query),
    ],
    ids=["ring_hash-header", "maglev-header", "maglev-query"],
)
def test_consistent_hashing_keeps_a_user_on_one_instance(
    mesh_env: MeshEnv, load_balancer: str, send: Send
) -> None:
    mesh = reviews_with(f"load_balancer: {load_balancer}")
    page, reviews = start_called(mesh_env, mesh, ["reviews"] * 3)
    with page.client() as client:
        landed = {user: {send(client, user) for _ in range(REQUESTS_PER_USER)} for user in USERS}
    assert all(len(ips) == 1 for ips in landed.values()), landed
    used = set().union(*landed.values())
    assert len(used) > 1, f"every user on {used}: the key is hashed, but not spread"
    assert used <= {r.ip for r in reviews}
