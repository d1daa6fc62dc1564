"""At scale, in process: 200 simulated sidecars over a 200-service mesh, a burst of 50 saves
that add and remove services, with every sidecar getting every service (over state-of-the-world
and delta streams) and with each service's `egress:` naming three.

Every client must end on the versions the control plane wants it to have, which carry the last
save, and no client may receive a resource it did not ask for (nor, on delta, hold after a
response anything but the version the control plane says it has). A correctness test, not timed.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshpilot.admin.api import config_dump
from meshpilot.controlplane import ControlPlane
from meshpilot.xds.cache import Watch
from meshpilot.xds.server import ADS_SERVICE
from meshpilot.xds.types import BY_SHORT, CLUSTER, ENDPOINT, PUSH_ORDER, ROUTE, SCOPED_ROUTE
from tests.conftest import free_port
from tests.support.controlplane import running_control_plane
from tests.support.holdings import Holding
from tests.support.meshgen import mesh_yaml, ring_callees, ring_egress
from tests.support.simulated import Protocol, ResponseDecoder, SidecarFleet, fleet_specs

SERVICES = 200
SIDECARS = 200
SAVES = 50
TYPES = PUSH_ORDER


def callees(index: int, egress: int) -> list[int]:
    """With scoping, service `index` calls the `egress` services after it (in a ring)."""
    return ring_callees(index, SERVICES, egress)


def mesh_text(save: int, egress: int = 0) -> str:
    """`SERVICES` synthetic services (tests.support.meshgen); save `save` gives svc-0 a v1
    weight of `save` and has extra services: of the first `save // 5`, those not left out
    (`left_out`), so that saves both add and remove services. With `egress`, each of the
    `SERVICES` calls only the services `callees` names."""
    extra = [(f"extra-{k}", 8000 + SERVICES + k) for k in range(save // 5) if not left_out(k, save)]
    return mesh_yaml(
        SERVICES,
        name="scale",
        added=extra,
        egress=ring_egress(SERVICES, egress) if egress else None,
        v1_weights={0: save},
    )


def left_out(extra: int, save: int) -> bool:
    return (extra + save) % 4 == 0


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with running_control_plane(tmp_path, mesh_text(0)) as control:
        yield control


def settled(watch: Watch) -> bool:
    """The control plane sent this proxy what it wants it to have, and got the ACK."""
    return all(
        state.subscribed
        and not state.awaiting_reply
        and state.sent_version == state.acked_version == state.desired_version
        for state in (watch.types[t] for t in TYPES)
    )


def pushes(plane: ControlPlane) -> float:
    return sum(plane.metrics.value("meshpilot_pushes_total", {"type": t}) for t in BY_SHORT)


def svc0_weights(route_table: dict[str, Any]) -> dict[str, int]:
    vhost = next(v for v in route_table["virtualHosts"] if v["name"] == "svc-0")
    split = vhost["routes"][0]["route"]["weightedClusters"]["clusters"]
    return {c["name"]: c["weight"] for c in split}


async def burst_of_saves(plane: ControlPlane, fleet: SidecarFleet, egress: int = 0) -> None:
    """Join every sidecar, save `SAVES` times in a burst, and wait until every sidecar holds
    what the control plane wants it to have after the last save, with no violation."""
    begun = time.monotonic()
    # Each sidecar that joins changes its service's endpoints, which every sidecar is sent.
    assert await fleet.wait_for(fleet.all_synced, timeout=40), "initial sync"
    print(f"initial sync of {SIDECARS} sidecars: {time.monotonic() - begun:.1f} s")

    for save in range(1, SAVES + 1):
        plane.mesh_path.write_text(mesh_text(save, egress))
        before = pushes(plane)
        await plane.reload()  # as the watcher does with a save it sees (it may see it too)
        # The next save comes while streams are pushing this one: changes merge mid-push.
        assert await fleet.wait_for(lambda: pushes(plane) > before, timeout=10), save  # noqa: B023
    last = hashlib.blake2b(mesh_text(SAVES, egress).encode(), digest_size=8).hexdigest()

    def converged() -> bool:
        watches = {w.proxy.node_id: w for w in plane.cache.watches}
        return (
            plane.status.version == last
            and len(watches) == SIDECARS
            and all(
                settled(watches[s.node_id])
                and all(s.version(t) == watches[s.node_id].types[t].acked_version for t in TYPES)
                for s in fleet.sidecars
            )
        )

    started = time.monotonic()
    assert await fleet.wait_for(converged, timeout=40, interval=0.05), (
        f"not converged {time.monotonic() - started:.1f} s after the burst"
    )
    print(f"converged {time.monotonic() - started:.1f} s after the burst")
    assert fleet.violations == 0, [e for s in fleet.sidecars for e in s.violation_examples][:3]
    assert fleet.stream_errors == 0


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_a_burst_of_saves_leaves_every_client_on_the_last_one(
    plane: ControlPlane, protocol: Protocol
) -> None:
    specs = fleet_specs(SIDECARS, [f"svc-{i}" for i in range(SERVICES)])
    async with SidecarFleet(plane.ads.address, specs, channels=4, protocol=protocol) as fleet:
        await burst_of_saves(plane, fleet)
        for type_url in (ENDPOINT, ROUTE):  # the same for every sidecar
            assert len({s.version(type_url) for s in fleet.sidecars}) == 1
        # What the sidecars hold is the last save: its weights, its extra services.
        watch = plane.cache.watches[0]
        dump = config_dump(watch)
        tables = {t["name"]: t for t in dump[ROUTE]["resources"]}
        assert svc0_weights(tables["outbound|svc-0"]) == {
            "outbound|8000|v1|svc-0": SAVES,
            "outbound|8000|v2|svc-0": 100 - SAVES,
        }
        extras = {f"extra-{k}": not left_out(k, SAVES) for k in range(SAVES // 5)}
        assert extras["extra-9"] and not extras["extra-6"]
        sidecar = next(s for s in fleet.sidecars if s.node_id == watch.proxy.node_id)
        clusters = {c["name"]: c for c in dump[CLUSTER]["resources"]}
        held = {name.rsplit("|", 1)[1] for name in clusters if "|extra-" in name}
        assert held == {name for name, kept in extras.items() if kept}
        assert sidecar.state[CLUSTER].names == set(clusters)
        # The simulators' shortcut (the `outbound|` clusters are the EDS ones) holds.
        eds = {name for name, c in clusters.items() if c.get("type") == "EDS"}
        assert eds == {name for name in clusters if name.startswith("outbound|")}
        assert all(s.state[ENDPOINT].names == eds for s in fleet.sidecars)
        # And so does the other (a scope is named like the route table it loads).
        scopes = dump[SCOPED_ROUTE]["resources"]
        assert {s["name"] for s in scopes} == {s["routeConfigurationName"] for s in scopes}
        assert all(s.state[ROUTE].names == set(tables) for s in fleet.sidecars)


def test_the_decoder_reads_what_protobuf_reads() -> None:
    """Names, version, type and nonce as protobuf decodes them, including from the runs of
    resource bytes the decoder remembers from earlier responses."""

    def response(names: list[str], nonce: str) -> bytes:
        message = discovery_pb2.DiscoveryResponse(version_info="v" + nonce, type_url=CLUSTER)
        for name in names:
            cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
            message.resources.add().Pack(cluster)
        message.nonce = nonce
        return bytes(message.SerializeToString())

    shared = [f"outbound|{p}||svc-{p}" for p in range(50)]
    decoder = ResponseDecoder()
    for n in range(6):  # the same shared clusters, a different own cluster each time
        raw = response([*shared, f"inbound|{n}||"], str(n))
        decoded = decoder.decode(raw)
        parsed = discovery_pb2.DiscoveryResponse.FromString(raw)
        names = {cluster_pb2.Cluster.FromString(r.value).name for r in parsed.resources}
        assert decoded.names == names
        assert (decoded.version, decoded.type_url, decoded.nonce) == (
            parsed.version_info,
            parsed.type_url,
            parsed.nonce,
        )
        assert decoded.foreign == 0
    assert decoder.runs_read == 2  # the first two; then the shared run is known


async def test_a_resource_not_asked_for_is_a_violation() -> None:
    """Against a server that sends the endpoints of a cluster never asked for."""
    asked: list[list[str]] = []

    async def stream(_requests: Any, context: Any) -> None:
        while (request := await context.read()) is not grpc.aio.EOF:
            if request.response_nonce:
                continue  # an ACK
            reply = discovery_pb2.DiscoveryResponse(
                version_info="1", type_url=request.type_url, nonce="1"
            )
            if request.type_url == CLUSTER:
                for name in ("outbound|1||a", "inbound|8080||"):
                    reply.resources.add().Pack(cluster_pb2.Cluster(name=name))
            elif request.type_url == ENDPOINT:
                asked.append(list(request.resource_names))
                for name in ("outbound|1||a", "outbound|2||b"):
                    reply.resources.add().Pack(
                        endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
                    )
            await context.write(reply)

    handler = grpc.stream_stream_rpc_method_handler(
        stream,
        request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
        response_serializer=discovery_pb2.DiscoveryResponse.SerializeToString,
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(ADS_SERVICE, {"StreamAggregatedResources": handler})]
    )
    address = f"127.0.0.1:{free_port()}"
    server.add_insecure_port(address)
    await server.start()
    try:
        async with SidecarFleet(address, fleet_specs(1, ["a"]), reconnect=False) as fleet:
            sidecar = fleet.sidecars[0]
            assert await fleet.wait_for(lambda: sidecar.violations > 0, timeout=5)
    finally:
        await server.stop(grace=0)
    assert asked == [["outbound|1||a"]]
    assert sidecar.violations == 1
    assert "outbound|2||b" in sidecar.violation_examples[0]


async def test_scoped_sidecars_end_with_just_the_services_they_call(plane: ControlPlane) -> None:
    egress = 3
    plane.mesh_path.write_text(mesh_text(0, egress))
    await plane.reload()
    specs = fleet_specs(SIDECARS, [f"svc-{i}" for i in range(SERVICES)])
    async with SidecarFleet(plane.ads.address, specs, channels=4) as fleet:
        await burst_of_saves(plane, fleet, egress)
        for sidecar in fleet.sidecars:
            index = int(sidecar.spec.service.removeprefix("svc-"))
            calls = {
                f"outbound|{8000 + j}|{subset}|svc-{j}"
                for j in callees(index, egress)
                for subset in ("", "v1", "v2")
            }
            assert sidecar.state[CLUSTER].names == {"inbound|8080||", *calls}
            assert sidecar.state[ENDPOINT].names == calls


def test_the_delta_decoder_and_holding_read_what_protobuf_reads() -> None:
    """Names, versions and removed names of delta responses as protobuf decodes them, applied
    to what a sidecar holds, whose version is the sum of the resource versions (mod 2**64)."""

    def response(versions: dict[str, int], removed: list[str], nonce: str) -> bytes:
        message = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info="v" + nonce, type_url=CLUSTER, removed_resources=removed
        )
        for name, version in versions.items():
            res = message.resources.add(name=name, version=f"{version:016x}")
            res.resource.Pack(cluster_pb2.Cluster(name=name))
        message.nonce = nonce
        return bytes(message.SerializeToString())

    decoder = ResponseDecoder(delta=True)
    held = Holding()
    expected: dict[str, int] = {}
    shared = {f"outbound|{p}||svc-{p}": p + 1 for p in range(20)}
    steps = [({**shared, "inbound|1||": 1 << 63}, []), ({"outbound|3||svc-3": 7}, ["inbound|1||"])]
    for n, (versions, removed) in enumerate([*steps, ({**shared, "inbound|2||": 5}, [])]):
        decoded = decoder.decode(response(versions, removed, str(n)))
        assert decoded.names == set(versions) and decoded.removed == tuple(removed)
        assert decoded.version == f"v{n}" and decoded.foreign == 0
        held.apply(decoder.transitions[CLUSTER], decoded.known, decoded.more, decoded.removed)
        expected = {k: v for k, v in {**expected, **versions}.items() if k not in removed}
        assert dict(held.items()) == {k: f"{v:016x}" for k, v in expected.items()}
        assert held.version == f"{sum(expected.values()) % (1 << 64):016x}"
