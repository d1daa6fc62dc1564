"""Mesh files shared by e2e tests, written once: a caller (productpage, or `client`) and the
services it calls, on port 9080 unless said otherwise; most tests call `reviews`."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable, Sequence

from harness.client import LoadGenerator, MeshClient, Result
from harness.mesh import Instance, MeshEnv
from harness.wait import http_json

CALLER = "productpage"


def block(yaml: str, indent: int = 0) -> str:
    """A YAML snippet written at any indentation in a test, re-indented by `indent` spaces."""
    return textwrap.indent(textwrap.dedent(yaml).strip("\n"), " " * indent)


def caller_mesh(services: str, caller: str = CALLER) -> str:
    """The e2e mesh of `services` (the `services:` mapping) and their caller on port 9080."""
    return f"mesh: e2e\nservices:\n  {caller}:\n    port: 9080\n{block(services, 2)}\n"


def reviews_with(settings: str = "") -> str:
    """A caller and `reviews` on port 9080 with `settings` (lines of reviews' own mapping)."""
    return caller_mesh(f"reviews:\n  port: 9080\n{block(settings, 2)}")


def reviews_mesh(v1: int, v2: int, extra_routes: str = "") -> str:
    """reviews in two versions (subsets v1 and v2), split `v1`/`v2` by its last route; the
    routes `extra_routes` (a YAML list) come first."""
    routes = f"{block(extra_routes)}\n" if extra_routes.strip() else ""
    routes += f"- name: split\n  to: [{{subset: v1, weight: {v1}}}, {{subset: v2, weight: {v2}}}]"
    return reviews_with(
        f"subsets:\n  v1: {{version: v1}}\n  v2: {{version: v2}}\nroutes:\n{block(routes, 2)}"
    )


def live_edit(
    env: MeshEnv,
    caller: Instance,
    mesh_text: str,
    in_force: Callable[[Result], bool],
    settle: float,
) -> tuple[LoadGenerator, float, float]:
    """Save `mesh_text` while `caller` sends requests to reviews, two at a time; returns the
    load (none failed), the time of the save and the time from which every result showed the
    edit `in_force` (for `settle` seconds)."""
    with LoadGenerator(caller.client(), "reviews", concurrency=2) as load:
        load.wait_for_results(50)
        saved = time.monotonic()
        env.write_mesh(mesh_text)
        effective = load.wait_effective(in_force, settle=settle)
        load.wait_for_results(50)
    assert load.failures() == [], load.summary()
    return load, saved, effective


def start_reviews_mesh(env: MeshEnv, mesh_text: str) -> tuple[Instance, Instance, Instance]:
    """Control plane, a productpage caller and reviews v1 and v2; returns once the caller's
    sidecar has both reviews instances as endpoints of their subsets."""
    env.start_control_plane(env.write_mesh(mesh_text))
    page = env.start_instance(CALLER, "v1")
    v1 = env.start_instance("reviews", "v1")
    v2 = env.start_instance("reviews", "v2")
    page.admin.wait_hosts("outbound|9080|v1|reviews", [v1.inbound])
    page.admin.wait_hosts("outbound|9080|v2|reviews", [v2.inbound])
    return page, v1, v2


def start_called(
    env: MeshEnv, mesh_text: str, callees: Sequence[str]
) -> tuple[Instance, list[Instance]]:
    """Control plane, a productpage caller and a v1 instance of each of `callees` (a service
    named twice has two); returns once the caller's sidecar has every one of them as a member
    of its service's cluster."""
    env.start_control_plane(env.write_mesh(mesh_text))
    page = env.start_instance(CALLER, "v1")
    instances = [env.start_instance(service, "v1") for service in callees]
    for service in dict.fromkeys(callees):
        members = [i.inbound for i, s in zip(instances, callees, strict=True) if s == service]
        page.admin.wait_hosts(f"outbound|9080||{service}", members)
    return page, instances


def version(client: MeshClient, path: str, method: str = "GET", **headers: str) -> str:
    """The version of the reviews instance that answered `path` (which must answer 200)."""
    reply = client.request("reviews", path, method=method, headers=headers)
    assert reply.status == 200, (path, reply.status, reply.text)
    answered: str = reply.json()["version"]
    return answered


def seen(instance: Instance) -> int:
    """Requests with `Host: reviews` the instance's app has received so far."""
    hosts: dict[str, int] = http_json(f"{instance.app_url}/__seen")["hosts"]
    return hosts.get("reviews", 0)
