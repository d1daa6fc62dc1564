"""`tcp_keepalive`: the caller's sidecar turns TCP keepalive on for its connections to a
service's instances, with the probe timing of the mesh file. Seen on the real socket (the
kernel's keepalive timer, as `ss` shows it) rather than only in Envoy's configuration."""

from __future__ import annotations

import re
import subprocess

from harness.mesh import Instance, MeshEnv
from meshes import caller_mesh, start_called

MESH = caller_mesh(
    """
    reviews:
      port: 9080
      tcp_keepalive: {time: 7s, interval: 3s, probes: 4}
    ratings:
      port: 9080
    """
)
KEEPALIVE_TIMER = re.compile(r"timer:\(keepalive,([^,]+),")


def keepalive_timers(instance: Instance) -> list[str]:
    """The keepalive timer (time left, as `ss` prints it) of each established connection to
    `instance`'s inbound port; none when keepalive is off on them."""
    listed = subprocess.run(
        ["ss", "-tnoH", "state", "established", "dst", instance.inbound],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    assert listed.strip(), f"no connection to {instance.inbound}"
    return KEEPALIVE_TIMER.findall(listed)


def test_connections_to_the_instances_have_the_keepalive_of_the_mesh_file(
    mesh_env: MeshEnv,
) -> None:
    page, (reviews, ratings) = start_called(mesh_env, MESH, ["reviews", "ratings"])
    with page.client() as client:
        assert client.get("reviews").status == 200
        assert client.get("ratings").status == 200
    assert len(keepalive_timers(reviews)) == 1  # SO_KEEPALIVE on Envoy's one connection
    assert keepalive_timers(ratings) == []  # no tcp_keepalive: the system's default, off
    options = page.admin.dynamic_clusters()["outbound|9080||reviews"]
    assert options["upstream_connection_options"]["tcp_keepalive"] == {
        "keepalive_time": 7,
        "keepalive_interval": 3,
        "keepalive_probes": 4,
    }
