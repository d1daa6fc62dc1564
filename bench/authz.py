"""ext_authz benchmark: checks/s and check latency of `meshpilot mixer` through a real Envoy.

A mesh with a `custom` policy on service `api` that matches every request (no `from:`, no `to:`;
requests sent straight to an inbound port have no source), whose hook is
`def check(request): return True`; `meshpilot serve`, `meshpilot mixer --workers N`, one `api`
instance (the fast asyncio app of bench/dataplane.py) with its real Envoy sidecar. For each N:

  (a) max checks/s: wrk, closed loop, against the sidecar's inbound port; checks counted by
      Envoy (`http.inbound.ext_authz.ok` delta / duration), failed checks too (`.error`,
      `.denied`: the mesh fails closed, so an overloaded mixer shows up as 403s);
  (b) latency at about a fixed rate (wrk with a Lua script that spaces each connection's
      requests by exponential waits, so arrivals are spread like a Poisson process; h2load
      --rps fires all its connections on the same tick, and those bursts dominated its
      latencies): end to end, and Envoy's own timing of the call to the mixer
      (`cluster.mixer.upstream_rq_time`, whole milliseconds); then the same rate with no policy
      at all, and the difference.

Then (c) the mixer alone, with no Envoy: h2load sending gRPC Check calls (a CheckRequest like
Envoy's) over several HTTP/2 connections straight to the mixer port, which SO_REUSEPORT spreads
over the workers; and (d) the same load against bench/grpc_floor.py, a grpc.aio server whose
Check returns a constant: the floor of any Python gRPC server, so the mixer's own share of the
CPU per check is the difference. CPU use per process group is printed for every run ("others"
is whatever else ran on the machine meanwhile). Targets: >= 8,000 checks/s; p99 <= 5 ms at
2,000/s.

    python bench/authz.py [--ip-block 127.0.91] [--workers 1,2] [--runs 3] [--seconds 8]
                          [--connections 32] [--rate 2000]

Needs `wrk` and `h2load` (apt-get install wrk nghttp2-client). Everything it starts is stopped
on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataplane import (
    CUSTOM,
    HOOK,
    MIXER_GRPC_PORT,
    CpuMeter,
    FixedRateResult,
    World,
    WrkResult,
    accepts_connections,
    envoy_histogram_buckets,
    envoy_stats,
    fixed_rate,
    format_cpu,
    group_members,
    histogram_quantiles,
    http_get,
    machine,
    median,
    mesh_text,
    mixer_arguments,
    mixer_workers,
    require_tool,
    undisturbed,
    wait_for,
    world,
    wrk,
)

AUTHZ = "http.inbound.ext_authz."
MIXER_RQ_TIME = "cluster.mixer.upstream_rq_time"
CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"
Cores = dict[str, float]
MIXER_RQ_COMPLETED = "cluster.mixer.upstream_rq_completed"
STATS_FLUSH_S = 5.0  # Envoy's default stats_flush_interval


def check_request_frame(ip: str) -> bytes:
    """A gRPC-framed CheckRequest shaped like the ones the sidecar sends for `GET /`."""
    from envoy.service.auth.v3 import external_auth_pb2

    request = external_auth_pb2.CheckRequest()
    attributes = request.attributes
    attributes.source.address.socket_address.address = "127.0.0.1"
    attributes.source.address.socket_address.port_value = 40000
    attributes.destination.address.socket_address.address = ip
    attributes.destination.address.socket_address.port_value = 15006
    http = attributes.request.http
    http.id, http.method, http.path = "1234567890123", "GET", "/"
    http.host, http.scheme, http.protocol = f"{ip}:15006", "http", "HTTP/1.1"
    http.headers.update(
        {
            ":authority": f"{ip}:15006",
            ":path": "/",
            ":method": "GET",
            ":scheme": "http",
            "user-agent": "wrk",
            "x-forwarded-proto": "http",
            "x-request-id": "5b0e3c2e-2d5e-4a55-9a43-1c3f7b0b6f11",
        }
    )
    attributes.request.time.GetCurrentTime()
    body = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(body)) + body


def probe_ok(url: str) -> bool:
    return http_get(url, timeout=2.0).status == 200


@dataclass
class MaxRun:
    checks: float  # checks/s that Envoy counted as ok
    cores: Cores  # per process group
    workers: list[float]  # cores of each mixer worker


def max_checks(
    args: argparse.Namespace, w: World, url: str, ip: str, meter: CpuMeter, workers: int
) -> list[MaxRun]:
    runs = []
    worker_pids = mixer_workers(w.mixer)
    split = CpuMeter({f"w{i}": (lambda p=pid: [p]) for i, pid in enumerate(worker_pids)})
    for run in range(1, args.runs + 1):

        def measure() -> tuple[tuple[WrkResult, dict[str, int], dict[str, float]], Cores]:
            before = envoy_stats(ip, f"^{AUTHZ}")
            meter.start()
            split.start()
            result = wrk(url, args.seconds, args.connections)
            per_worker = split.stop()
            cores = meter.stop()
            after = envoy_stats(ip, f"^{AUTHZ}")
            delta = {k.removeprefix(AUTHZ): after[k] - before.get(k, 0) for k in after}
            return (result, delta, per_worker), cores

        (result, delta, per_worker), cores = undisturbed(measure)
        checks = delta.get("ok", 0) / result.seconds
        runs.append(MaxRun(checks, cores, list(per_worker_cores(per_worker))))
        failed = {k: v for k, v in delta.items() if k != "ok" and v}
        workers_split = " / ".join(f"{v:.2f}" for v in per_worker_cores(per_worker))
        print(
            f"  [{workers}w] max run {run}: {checks:7.0f} checks/s ok (wrk {result.rps:.0f} req/s, "
            f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, non-2xx {result.non_2xx}, "
            f"failed checks {failed or 0})\n"
            f"      cpu cores: {format_cpu(cores)}; per mixer worker: {workers_split}",
            flush=True,
        )
    print(f"  command: {result.command}")
    return runs


def per_worker_cores(cores: Cores) -> list[float]:
    return [v for k, v in cores.items() if re.fullmatch(r"w\d+", k)]


def flushed_call_times(ip: str) -> dict[float, int]:
    """The buckets of Envoy's mixer call times once they hold every call completed so far.

    Envoy's admin shows a histogram as of its last stats flush (every 5 s), but counters live:
    wait until the histogram counts as many calls as the counter of completed ones."""

    def caught_up() -> tuple[dict[float, int]] | None:
        completed = envoy_stats(ip, f"^{re.escape(MIXER_RQ_COMPLETED)}$")[MIXER_RQ_COMPLETED]
        buckets = envoy_histogram_buckets(ip, MIXER_RQ_TIME)
        return (buckets,) if sum(buckets.values()) >= completed else None

    return wait_for(caught_up, 3 * STATS_FLUSH_S, 0.1, "Envoy's stats flush")[0]


def fixed_rate_runs(
    args: argparse.Namespace, url: str, ip: str, meter: CpuMeter, label: str, envoy_timing: bool
) -> list[tuple[FixedRateResult, tuple[int, list[float]] | None]]:
    results = []
    for run in range(1, args.runs + 1):

        def measure() -> tuple[tuple[FixedRateResult, tuple[int, list[float]] | None], Cores]:
            before = flushed_call_times(ip) if envoy_timing else {}
            meter.start()
            result = fixed_rate(url, args.rate, args.seconds, connections=args.clients)
            cores = meter.stop()
            timing = None
            if envoy_timing:
                after = flushed_call_times(ip)
                timing = histogram_quantiles(before, after, [0.5, 0.99])
            return (result, timing), cores

        (result, timing), cores = undisturbed(measure)
        results.append((result, timing))
        envoy_text = ""
        if timing is not None:
            count, (p50, p99) = timing
            envoy_text = (
                f"; Envoy's mixer call time ({count} calls): p50 in [{p50:.0f}, {p50 + 1:.0f}) ms,"
                f" p99 in [{p99:.0f}, {p99 + 1:.0f}) ms"
            )
        print(
            f"  [{label}] ~{args.rate}/s run {run}: {result.rps:.0f} req/s achieved, "
            f"p50 {result.quantile(0.5):.3f} ms, p90 {result.quantile(0.9):.3f} ms, "
            f"p99 {result.quantile(0.99):.3f} ms, p99.9 {result.quantile(0.999):.3f} ms, "
            f"non-2xx {result.non_2xx}, socket errors {result.socket_errors}{envoy_text}\n"
            f"      cpu cores: {format_cpu(cores)}",
            flush=True,
        )
    print(f"  command: {results[-1][0].command}")
    return results


def h2load_checks(
    args: argparse.Namespace, w: World, address: str, meter: CpuMeter, label: str
) -> list[float]:
    """checks/s of h2load sending gRPC Check calls (shaped like Envoy's) straight to `address`."""
    frame = w.tmp / "check.bin"
    frame.write_bytes(check_request_frame(f"{w.block}.10"))
    argv = [require_tool("h2load", "nghttp2-client"), "-c", str(args.direct_connections)]
    argv += ["-m", "16", "-D", f"{args.seconds:g}", "--warm-up-time", "1", "-d", str(frame)]
    for header in ("content-type: application/grpc", "te: trailers", "x-mesh-destination: api"):
        argv += ["-H", header]
    argv.append(f"http://{address}{CHECK_PATH}")
    rates = []
    for run in range(1, args.runs + 1):

        def measure() -> tuple[str, Cores]:
            meter.start()
            out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
            return out, meter.stop()

        out, cores = undisturbed(measure)
        found = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
        codes = re.search(r"status codes: (\d+) 2xx", out)
        assert found is not None and codes is not None, out
        rate = float(found.group(2))
        rates.append(rate)
        served = sum(v for k, v in cores.items() if k not in ("load", "bench", "others"))
        print(
            f"  [{label}] run {run}: {rate:7.0f} checks/s ({codes.group(1)} HTTP 200), "
            f"{served / rate * 1e6:.0f} us of CPU per check; cpu cores: {format_cpu(cores)}",
            flush=True,
        )
    print("  command: h2load " + " ".join(argv[1:]))
    return rates


def mixer_alone(args: argparse.Namespace, w: World, workers: int) -> list[float]:
    pids = mixer_workers(w.mixer)
    meter = CpuMeter({f"w{i}": (lambda p=pid: [p]) for i, pid in enumerate(pids)})
    return h2load_checks(args, w, w.mixer_grpc, meter, f"{workers}w mixer alone")


def grpc_floor(args: argparse.Namespace, w: World) -> list[float]:
    """The same load against bench/grpc_floor.py, one process: what grpc.aio costs by itself."""
    address = f"{w.block}.3:{MIXER_GRPC_PORT}"
    floor = w.procs.start(
        "grpc-floor", [sys.executable, str(Path(__file__).parent / "grpc_floor.py"), address]
    )
    try:
        wait_for(
            lambda: accepts_connections(address.split(":")[0], MIXER_GRPC_PORT),
            10,
            message="the gRPC floor server",
            ignore=(OSError,),
        )
        meter = CpuMeter({"floor": lambda: [floor.pid]})
        return h2load_checks(args, w, address, meter, "grpc.aio floor, 1 process")
    finally:
        w.procs.stop(floor)


def run(args: argparse.Namespace, w: World) -> None:
    (w.tmp / "hook.py").write_text(HOOK)
    custom = mesh_text(w.mixer_grpc, CUSTOM)
    none = mesh_text(w.mixer_grpc, "")
    w.write_mesh(custom)
    w.start_control_plane()
    api = w.start_instance("api", "v1", 10)
    url = api.inbound_url
    meter = CpuMeter(
        {
            "envoy": lambda: group_members(api.sidecar.pid),
            "app": lambda: [api.app.pid] if api.app else [],
            "mixer": lambda: group_members(w.mixer.pid) if w.mixer else [],
        }
    )
    print(f"machine: {machine()}")
    summary = []
    for workers in args.workers:
        w.stop_mixer()
        w.start_mixer(workers)
        wait_for(lambda: probe_ok(url), 30, message="a checked request to pass", ignore=(OSError,))
        print(f"\nmixer with {workers} worker(s), custom policy on api:")
        wrk(url, 2, args.connections)  # warm-up
        rates = max_checks(args, w, url, api.ip, meter, workers)
        timed = fixed_rate_runs(args, url, api.ip, meter, f"{workers}w custom", True)
        direct = mixer_alone(args, w, workers)
        summary.append((workers, rates, timed, direct))

    print("\ngrpc.aio with an empty Check handler (the floor of any Python gRPC server):")
    floor = grpc_floor(args, w)

    print("\nno policy at all (baseline for the latency difference):")
    w.apply(none)
    baseline = fixed_rate_runs(args, url, api.ip, meter, "no policy", False)
    base_p50 = median([r.quantile(0.5) for r, _ in baseline])
    base_p99 = median([r.quantile(0.99) for r, _ in baseline])

    print(f"\nsummary (medians of {args.runs} runs; {machine()}):")
    base_rps = median([r.rps for r, _ in baseline])
    print(
        f"  no policy at ~{args.rate}/s ({base_rps:.0f} achieved): p50 {base_p50:.3f} ms, "
        f"p99 {base_p99:.3f} ms"
    )
    print(f"  grpc.aio floor, 1 process: {median(floor):.0f} checks/s")
    for workers, runs, timed, direct in summary:
        checks = median([r.checks for r in runs])
        split = [median([r.workers[i] for r in runs]) for i in range(len(runs[0].workers))]
        mixer_us = median([r.cores["mixer"] / r.checks * 1e6 for r in runs])
        envoy_us = median([r.cores["envoy"] / r.checks * 1e6 for r in runs])
        rps = median([r.rps for r, _ in timed])
        p50 = median([r.quantile(0.5) for r, _ in timed])
        p99 = median([r.quantile(0.99) for r, _ in timed])
        envoy_p50 = median([t[1][0] for _, t in timed if t is not None])
        envoy_p99 = median([t[1][1] for _, t in timed if t is not None])
        print(
            f"  {workers} worker(s): max {checks:.0f} checks/s through Envoy (runs: "
            f"{', '.join(f'{r.checks:.0f}' for r in runs)}; CPU per check: mixer "
            f"{mixer_us:.0f} us, Envoy {envoy_us:.0f} us; cores per worker "
            f"{' / '.join(f'{c:.2f}' for c in split)}); mixer alone {median(direct):.0f} "
            f"checks/s (runs: {', '.join(f'{r:.0f}' for r in direct)})\n"
            f"      at ~{args.rate}/s ({rps:.0f} achieved): end to end p50 {p50:.3f} ms "
            f"(+{p50 - base_p50:.3f} vs no policy), p99 {p99:.3f} ms (+{p99 - base_p99:.3f}); "
            f"Envoy's mixer call p50 in [{envoy_p50:.0f}, {envoy_p50 + 1:.0f}) ms, "
            f"p99 in [{envoy_p99:.0f}, {envoy_p99 + 1:.0f}) ms"
        )


def main() -> None:
    parser = mixer_arguments(__doc__.split("\n\n")[0], "127.0.91", "mixer worker counts to try")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--rate", type=int, default=2000, help="fixed rate for latency, req/s")
    parser.add_argument(
        "--clients", type=int, default=100, help="wrk connections for the fixed rate"
    )
    parser.add_argument(
        "--direct-connections", type=int, default=8, help="h2load HTTP/2 connections (alone)"
    )
    args = parser.parse_args()
    require_tool("wrk", "wrk")
    require_tool("h2load", "nghttp2-client")
    with world(args.ip_block, args.keep_logs) as w:
        run(args, w)


if __name__ == "__main__":
    main()
