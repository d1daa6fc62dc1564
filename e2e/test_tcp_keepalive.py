"""`tcp_keepalive`: the caller's sidecar turns TCP keepalive on for its connections to a
service's instances, with the probe timing of the mesh file. Seen on the real socket (the
kernel's keepalive timer in /proc/net/tcp) besides Envoy's configuration; the probes themselves
(after 7 s idle) are not waited for."""

from __future__ import annotations

import os
import socket
from pathlib import Path

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
KEEPALIVE_TIMER = 2  # /proc/net/tcp's `tr` of a socket whose keepalive timer is armed
ESTABLISHED = "01"


def keepalive_timers(instance: Instance) -> list[float]:
    """Seconds left on the keepalive timer of each established connection to `instance`'s
    inbound port, as the kernel has them (/proc/net/tcp); none when keepalive is off."""
    ip, port = instance.inbound.rsplit(":", 1)
    remote = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{int(port):04X}"
    ticks = os.sysconf("SC_CLK_TCK")
    timers = []
    connections = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[2] != remote or fields[3] != ESTABLISHED:
            continue
        connections += 1
        timer, when = fields[5].split(":")
        if int(timer, 16) == KEEPALIVE_TIMER:
            timers.append(int(when, 16) / ticks)
    assert connections, f"no connection to {instance.inbound}"
    return timers


def test_connections_to_the_instances_have_the_keepalive_of_the_mesh_file(
    mesh_env: MeshEnv,
) -> None:
    page, (reviews, ratings) = start_called(mesh_env, MESH, ["reviews", "ratings"])
    with page.client() as client:
        assert client.get("reviews").status == 200
        assert client.get("ratings").status == 200
    timers = keepalive_timers(reviews)
    assert len(timers) == 1, timers  # SO_KEEPALIVE on Envoy's one connection...
    assert 5 <= timers[0] <= 7, timers  # ...probing after 7 s idle (a little of it gone by now)
    assert keepalive_timers(ratings) == []  # no tcp_keepalive: the system's default, off
    options = page.admin.dynamic_clusters()["outbound|9080||reviews"]
    assert options["upstream_connection_options"]["tcp_keepalive"] == {
        "keepalive_time": 7,
        "keepalive_interval": 3,
        "keepalive_probes": 4,
    }
