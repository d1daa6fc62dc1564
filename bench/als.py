"""Access-log benchmark: how many entries/s `meshpilot mixer` absorbs, and that none are lost.

(1) Ingestion: a gRPC ALS client sends `StreamAccessLogsMessage`s the way Envoy does (a first
    message with the identifier, then batches of HTTP entries; half the streams from inbound
    listeners, half from outbound ones) over several streams, each on its own HTTP/2 connection
    so that SO_REUSEPORT spreads them over the workers. Messages are serialized up front, so the
    client costs little. Timed from the first message until the mixer's `/metrics` counts every
    entry in `mesh_requests_total` (polled every 50 ms). Target: >= 30,000 entries/s.
(2) None lost: `meshpilot serve`, the mixer, an `api` instance and a `web` sidecar, with
    `telemetry.access_log: true`; h2load sends a fixed number of requests at a fixed rate to
    web's outbound port (Host: api), i.e. web -> api through both sidecars. Once the logs are
    flushed, `mesh_requests_total` must have grown by exactly the number of requests h2load
    completed, for reporter="source" and for reporter="destination".

    python bench/als.py [--ip-block 127.0.93] [--workers 1,2] [--runs 3] [--entries 200000]
                        [--rates 1000] [--seconds 10]

Needs `h2load` (apt-get install nghttp2-client). Everything it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from dataplane import (
    CpuMeter,
    World,
    envoy_stats,
    format_cpu,
    group_members,
    http_get,
    machine,
    median,
    mixer_arguments,
    mixer_workers,
    require_tool,
    undisturbed,
    world,
)

from tests.support.wait import Steady, wait_for, wait_for_async, wait_steady

STREAM_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
POLL_INTERVAL = 0.05
STALL_TIMEOUT = 10.0  # no new entry counted for this long: the rest are lost


# --- (1) ingestion ----------------------------------------------------------------------------


def identifier(
    service: str, version: str, ip: str, log_name: str
) -> als_pb2.StreamAccessLogsMessage:
    metadata = struct_pb2.Struct()
    metadata.update({"service": service, "labels": {"version": version}, "ip": ip})
    node = base_pb2.Node(id=f"{service}~{ip}", cluster=service, metadata=metadata)
    message = als_pb2.StreamAccessLogsMessage()
    message.identifier.node.CopyFrom(node)
    message.identifier.log_name = log_name
    return message


def http_entry(
    rng: random.Random, inbound: bool, caller: str, callee: str
) -> accesslog_pb2.HTTPAccessLogEntry:
    """An entry with the fields a sidecar fills in for a plain HTTP/1.1 request."""
    entry = accesslog_pb2.HTTPAccessLogEntry()
    entry.protocol_version = accesslog_pb2.HTTPAccessLogEntry.HTTP11
    common = entry.common_properties
    common.downstream_remote_address.socket_address.address = "127.0.93.11"
    common.downstream_remote_address.socket_address.port_value = rng.randrange(30000, 60000)
    common.downstream_local_address.socket_address.address = "127.0.93.10"
    common.downstream_local_address.socket_address.port_value = 15006 if inbound else 15001
    common.upstream_remote_address.socket_address.address = "127.0.93.10"
    common.upstream_remote_address.socket_address.port_value = 8080 if inbound else 15006
    common.upstream_local_address.socket_address.address = "127.0.0.1"
    common.upstream_local_address.socket_address.port_value = rng.randrange(30000, 60000)
    common.upstream_cluster = "inbound|8080||" if inbound else f"outbound|8080||{callee}"
    common.route_name = "inbound" if inbound else "default"
    common.start_time.FromNanoseconds(time.time_ns())
    millis = rng.randrange(1, 40)
    for field in ("time_to_last_rx_byte", "time_to_first_upstream_tx_byte"):
        getattr(common, field).FromMicroseconds(50)
    for field in (
        "time_to_last_upstream_rx_byte",
        "time_to_first_downstream_tx_byte",
        "time_to_last_downstream_tx_byte",
    ):
        getattr(common, field).FromMilliseconds(millis)
    request = entry.request
    request.request_method = base_pb2.RequestMethod.Value("GET")
    request.scheme, request.authority = "http", callee
    request.path = f"/items/{rng.randrange(1000)}"
    request.user_agent = "bench/als"
    request.request_id = f"{rng.getrandbits(128):032x}"
    request.request_headers_bytes = 180
    if inbound:
        request.request_headers["x-mesh-source"] = caller
    response = entry.response
    response.response_code.value = rng.choices((200, 404, 503), (90, 8, 2))[0]
    response.response_headers_bytes, response.response_body_bytes = 120, 3
    response.response_code_details = "via_upstream"
    response.response_headers["x-mesh-version"] = "v1"
    return entry


def stream_messages(
    rng: random.Random, index: int, entries: int, batch: int
) -> tuple[list[bytes], int]:
    """One stream's serialized messages (identifier first) and its entry count. Even streams
    are inbound (reporter destination), odd ones outbound (reporter source)."""
    inbound = index % 2 == 0
    caller, callee = f"web{index % 3}", "api"
    if inbound:
        first = identifier(callee, "v1", f"127.0.93.{100 + index}", "inbound")
    else:
        first = identifier(caller, "v1", f"127.0.93.{100 + index}", "outbound")
    templates = [http_entry(rng, inbound, caller, callee) for _ in range(64)]
    messages, sent = [], 0
    while sent < entries:
        message = first if not messages else als_pb2.StreamAccessLogsMessage()
        count = min(batch, entries - sent)
        message.http_logs.log_entry.extend(rng.choice(templates) for _ in range(count))
        messages.append(message.SerializeToString())
        sent += count
    return messages, sent


def metric_counts(metrics_url: str) -> dict[str, float]:
    """Sum of mesh_requests_total per reporter, and the dropped-entries counter."""
    text = http_get(metrics_url, timeout=5.0).text
    counts = {"source": 0.0, "destination": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        if line.startswith("mesh_requests_total{"):
            reporter = re.search(r'reporter="(\w+)"', line)
            if reporter:
                counts[reporter.group(1)] = counts.get(reporter.group(1), 0.0) + float(
                    line.rsplit(" ", 1)[1]
                )
        elif line.startswith("mesh_access_log_entries_dropped_total "):
            counts["dropped"] = float(line.rsplit(" ", 1)[1])
    return counts


def total(counts: dict[str, float]) -> float:
    return counts["source"] + counts["destination"]


async def send_stream(address: str, messages: list[bytes]) -> None:
    options = [("grpc.use_local_subchannel_pool", 1)]  # one connection per stream
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        call = channel.stream_unary(STREAM_METHOD, request_serializer=None)

        async def requests() -> AsyncIterator[bytes]:
            for message in messages:
                yield message

        await call(requests())


async def ingest(
    address: str, metrics_url: str, streams: list[list[bytes]], expected: int
) -> dict[str, float]:
    """Send every stream concurrently; return when the mixer counted `expected` more entries
    (or stopped making progress)."""
    base = total(metric_counts(metrics_url))
    started = time.monotonic()
    senders = [asyncio.create_task(send_stream(address, messages)) for messages in streams]
    counted = Steady(0.0)
    sent_at = None
    counts: dict[str, float] = {}

    async def all_counted_or_stalled() -> bool:
        nonlocal sent_at, counts
        if sent_at is None and all(s.done() for s in senders):
            sent_at = time.monotonic()
        counts = await asyncio.to_thread(metric_counts, metrics_url)
        unchanged = counted.update(total(counts) - base)
        return bool(counted.value >= expected or unchanged > STALL_TIMEOUT)

    message = f"{expected} entries counted"
    await wait_for_async(all_counted_or_stalled, float("inf"), POLL_INTERVAL, message)
    for sender in senders:
        await sender  # raise a sender's error, if any
    finished = counted.changed_at
    return {
        "seconds": finished - started,
        "sent_seconds": (sent_at or finished) - started,
        "counted": int(counted.value),
        "dropped": counts["dropped"],
    }


def ingestion(args: argparse.Namespace, w: World) -> dict[int, list[float]]:
    rng = random.Random(7)
    per_stream = args.entries // args.streams
    streams, expected = [], 0
    for index in range(args.streams):
        messages, count = stream_messages(rng, index, per_stream, args.batch)
        streams.append(messages)
        expected += count
    size = sum(len(m) for s in streams for m in s)
    print(
        f"ingestion: {expected} entries in {args.streams} streams, {args.batch} entries per "
        f"message ({size / expected:.0f} bytes per entry serialized)"
    )
    results: dict[int, list[float]] = {}
    for workers in args.workers:
        w.stop_mixer()
        w.start_mixer(workers)
        mixer = w.mixer
        assert mixer is not None
        worker_pids = mixer_workers(mixer)
        meter = CpuMeter(
            {
                "parent": lambda m=mixer: [m.pid],
                **{f"w{i}": (lambda p=pid: [p]) for i, pid in enumerate(worker_pids)},
            }
        )
        warm = [stream_messages(rng, i, 2 * args.batch, args.batch) for i in range(args.streams)]
        warm_expected = sum(count for _, count in warm)
        asyncio.run(ingest(w.mixer_grpc, w.mixer_metrics_url, [m for m, _ in warm], warm_expected))
        rates = []
        for run in range(1, args.runs + 1):

            def measure(m: CpuMeter = meter) -> tuple[dict[str, float], dict[str, float]]:
                m.start()
                result = asyncio.run(ingest(w.mixer_grpc, w.mixer_metrics_url, streams, expected))
                return result, m.stop()

            result, cores = undisturbed(measure)
            rate = result["counted"] / result["seconds"]
            rates.append(rate)
            lost = expected - result["counted"]
            print(
                f"  [{workers}w] run {run}: {rate:8.0f} entries/s ({result['counted']} counted "
                f"in {result['seconds']:.2f} s; client done sending after "
                f"{result['sent_seconds']:.2f} s; lost {lost}, dropped counter "
                f"{result['dropped']:.0f})\n      cpu cores: {format_cpu(cores)}",
                flush=True,
            )
        results[workers] = rates
    return results


# --- (2) none lost through real Envoy ---------------------------------------------------------


def mesh_text(mixer: str) -> str:
    return f"""
        mesh: bench-als
        mixer: {{address: {mixer}}}
        telemetry:
          access_log: true
        services:
          web:
            port: 8080
          api:
            port: 8080
        """


def wait_settled(metrics_url: str, quiet: float = 1.0, timeout: float = 30.0) -> dict[str, float]:
    """The counts once they have not changed for `quiet` seconds."""
    message = "mesh_requests_total to stop changing"
    return wait_steady(lambda: metric_counts(metrics_url), quiet, timeout, 0.1, message)


def none_lost(args: argparse.Namespace, w: World) -> list[tuple[int, int, dict[str, int]]]:
    w.write_mesh(mesh_text(w.mixer_grpc))
    w.start_control_plane()
    w.start_mixer(args.workers[-1])
    api = w.start_instance("api", "v1", 10)
    web = w.start_instance("web", "v1", 11, app=False)
    url = web.outbound_url

    def through() -> bool:
        return http_get(url, timeout=2.0, headers={"host": "api"}).status == 200

    wait_for(through, 30, message="web -> api through the mesh", ignore=(OSError,))
    meter = CpuMeter(
        {
            "envoys": lambda: group_members(api.sidecar.pid) + group_members(web.sidecar.pid),
            "app": lambda: [api.app.pid] if api.app else [],
            "mixer": lambda: group_members(w.mixer.pid) if w.mixer else [],
        }
    )
    outcomes = []
    h2load = require_tool("h2load", "nghttp2-client")
    for rate in args.rates:
        for run in range(1, args.runs + 1):
            clients = max(1, min(rate // 20, 100))
            requests = rate * int(args.seconds)
            before = wait_settled(w.mixer_metrics_url)
            envoy_before = {i.service: envoy_stats(i.ip, "grpc_access_log") for i in (api, web)}
            argv = [h2load, "--h1", "-c", str(clients), "--rps", f"{rate / clients:g}"]
            argv += ["-n", str(requests), "-H", ":authority: api", url]
            meter.start()
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            cores = meter.stop()
            flushed_at = time.monotonic()
            after = wait_settled(w.mixer_metrics_url)
            settle = time.monotonic() - flushed_at
            done = int(re.search(r"(\d+) done", out).group(1))  # type: ignore[union-attr]
            codes = re.search(r"status codes: (.*)", out).group(1)  # type: ignore[union-attr]
            achieved = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
            assert achieved is not None, out
            counted = {
                reporter: int(after[reporter] - before[reporter])
                for reporter in ("source", "destination")
            }
            dropped = after["dropped"] - before["dropped"]
            envoy_delta = {
                service: {
                    k.rsplit(".", 1)[1]: v - envoy_before[service].get(k, 0)
                    for k, v in envoy_stats(ip, "grpc_access_log").items()
                    if v - envoy_before[service].get(k, 0)
                }
                for service, ip in (("api", api.ip), ("web", web.ip))
            }
            verdict = "OK" if all(c == done for c in counted.values()) else "MISMATCH"
            print(
                f"  {rate}/s run {run}: h2load done {done} ({codes}) in {achieved.group(1)} s "
                f"({achieved.group(2)} req/s); counted source {counted['source']}, "
                f"destination {counted['destination']} -> {verdict}; dropped counter "
                f"{dropped:.0f}; settled {settle:.2f} s after the last response\n"
                f"      Envoy ALS stats: {envoy_delta}\n      cpu cores: {format_cpu(cores)}",
                flush=True,
            )
            outcomes.append((rate, done, counted))
    print("  command: h2load " + " ".join(argv[1:]))
    return outcomes


def run(args: argparse.Namespace, w: World) -> None:
    print(f"machine: {machine()}")
    ingested = ingestion(args, w) if not args.skip_ingestion else {}
    w.stop_mixer()
    print(f"\nnone lost through real Envoy (mixer with {args.workers[-1]} workers):")
    outcomes = none_lost(args, w)
    print(f"\nsummary ({machine()}):")
    for workers, rates in ingested.items():
        print(
            f"  ingestion, {workers} worker(s): median {median(rates):.0f} entries/s "
            f"(runs: {', '.join(f'{r:.0f}' for r in rates)})"
        )
    for rate in args.rates:
        runs = [(done, counted) for r, done, counted in outcomes if r == rate]
        exact = sum(all(c == done for c in counted.values()) for done, counted in runs)
        print(f"  none lost at {rate}/s: {exact} of {len(runs)} runs exact for both reporters")


def main() -> None:
    description = __doc__.split("\n\n")[0]
    parser = mixer_arguments(description, "127.0.93", "mixer worker counts (ingestion)")
    parser.add_argument("--entries", type=int, default=200_000, help="entries per ingestion run")
    parser.add_argument("--streams", type=int, default=8, help="concurrent ALS streams")
    parser.add_argument("--batch", type=int, default=50, help="entries per message")
    parser.add_argument("--rates", default="1000", help="fixed rates for the none-lost check")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of a none-lost run")
    parser.add_argument("--skip-ingestion", action="store_true")
    args = parser.parse_args()
    args.rates = [int(n) for n in args.rates.split(",")]
    require_tool("h2load", "nghttp2-client")
    with world(args.ip_block, args.keep_logs) as w:
        run(args, w)


if __name__ == "__main__":
    main()
