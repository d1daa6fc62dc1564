"""Data-plane cost of mTLS: requests/s and latency through two real Envoy sidecars, mutual TLS
between them against plaintext, in the same run (issue 12).

wrk -> the `web` sidecar's outbound port (IP:15001, `Host: api`) -> the `api` sidecar's inbound
port (15006) -> the fast app of bench/dataplane.py. Two meshes run side by side, each on its own
loopback block: one with a secure control plane (the default: join tokens, workload
certificates, mTLS between the sidecars) and one run `--insecure`, the only way to plaintext
between sidecars (`mtls: permissive` lets an inbound port also take plaintext, but callers still
use mTLS). Rounds alternate which mesh is measured first; figures are medians over rounds.

Each mesh is measured twice a round: saturated (wrk, `--connections` sending back to back: the
most requests/s, whose p50 is about connections / throughput), then paced (`--rate` requests/s,
Poisson arrivals over `--rate-connections`: the latency a request sees when nothing queues,
as Istio's latency figures are taken). Targets: mTLS costs <= 20% of the saturated requests/s
and adds <= 0.3 ms to the paced p50.

    python bench/mtls.py [--ip-block 127.0.93] [--plain-block 127.0.94] [--runs 5] [--seconds 8]
                         [--connections 32] [--rate 1000] [--rate-connections 16]
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataplane import (
    START_TIMEOUT,
    CpuMeter,
    FixedRateResult,
    Instance,
    World,
    WrkResult,
    envoy_stats,
    fixed_rate,
    format_cpu,
    group_members,
    http_get,
    machine,
    median,
    require_tool,
    undisturbed,
    wait_for,
    world,
    wrk,
)

MESH = """
    mesh: bench-mtls
    services:
      api: {port: 8080}
      web: {port: 8080}
"""
HOST = "api"
TLS_HANDSHAKES = r"ssl\.handshake$"
TARGET_COST = 0.20  # at most this fraction of plaintext's requests/s lost
TARGET_P50_MS = 0.3  # at most this much added to the median latency


@dataclass
class Hops:
    """One mesh's path: the caller's sidecar, the callee's sidecar and app, and their CPU."""

    name: str
    world: World
    caller: Instance
    callee: Instance
    saturated: list[WrkResult] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)  # during the saturated runs
    paced: list[FixedRateResult] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.caller.outbound_url

    def meter(self) -> CpuMeter:
        callee_app = self.callee.app
        return CpuMeter(
            {
                "caller": lambda: group_members(self.caller.sidecar.pid),
                "callee": lambda: group_members(self.callee.sidecar.pid),
                "app": lambda: [callee_app.pid] if callee_app else [],
            }
        )

    def handshakes(self) -> int:
        """TLS handshakes completed by the callee's sidecar (its inbound port)."""
        return sum(envoy_stats(self.callee.ip, TLS_HANDSHAKES).values())


def start_hops(name: str, w: World) -> Hops:
    """The two-service mesh on `w`, once `web`'s sidecar routes `Host: api` to `api`."""
    w.write_mesh(MESH)
    w.start_control_plane()
    callee = w.start_instance("api", "v1", 10)
    caller = w.start_instance("web", "v1", 11, app=False)
    wait_for(
        lambda: http_get(caller.outbound_url, headers={"host": HOST}).status == 200,
        START_TIMEOUT,
        message=f"{name}: web's sidecar to reach api",
        ignore=(OSError,),
        procs=w.watched(),
    )
    return Hops(name, w, caller, callee)


@contextmanager
def both_meshes(args: argparse.Namespace) -> Iterator[list[Hops]]:
    """Plaintext and mTLS meshes, both running until the end."""
    with ExitStack() as stack:
        plain = stack.enter_context(world(args.plain_block, args.keep_logs, secure=False))
        secure = stack.enter_context(world(args.ip_block, args.keep_logs, secure=True))
        yield [start_hops("plaintext", plain), start_hops("mtls", secure)]


def saturate(hops: Hops, args: argparse.Namespace) -> tuple[WrkResult, dict[str, float]]:
    """Closed loop: `--connections` connections sending back to back (the most requests/s)."""
    meter = hops.meter()
    meter.start()
    result = wrk(hops.url, args.seconds, args.connections, headers=[f"Host: {HOST}"])
    return result, meter.stop()


def pace(hops: Hops, args: argparse.Namespace) -> tuple[FixedRateResult, dict[str, float]]:
    """Open loop at `--rate` requests/s (Poisson arrivals): the latency a request sees when the
    sidecars are not saturated."""
    meter = hops.meter()
    meter.start()
    result = fixed_rate(
        hops.url, args.rate, args.seconds, args.rate_connections, headers=[f"Host: {HOST}"]
    )
    return result, meter.stop()


def measure_round(round_: int, paths: list[Hops], args: argparse.Namespace) -> None:
    """Both measures of each mesh; odd rounds start with the first mesh, even ones with the
    last."""
    for hops in paths if round_ % 2 else paths[::-1]:
        wrk(hops.url, 1, args.connections, headers=[f"Host: {HOST}"])  # warm the connections
        result, cores = undisturbed(functools.partial(saturate, hops, args))
        hops.saturated.append(result)
        hops.cpu.append(cores)
        paced, _ = undisturbed(functools.partial(pace, hops, args))
        hops.paced.append(paced)
        errors = [r.non_2xx + r.socket_errors for r in (result, paced)]
        if any(errors):
            print(f"  !! {hops.name}: {errors} non-2xx or socket errors (saturated, paced)")
        print(
            f"round {round_} {hops.name:9}: {result.rps:6.0f} req/s  p50 {result.p50_ms:.3f} ms"
            f"  p99 {result.p99_ms:.3f} ms  cpu: {format_cpu(cores)} | at {paced.rps:.0f} req/s:"
            f" p50 {paced.quantile(0.5):.3f} ms  p99 {paced.quantile(0.99):.3f} ms",
            flush=True,
        )


def summary(hops: Hops) -> dict[str, float]:
    """Medians over the rounds; the sidecars' CPU per request (both Envoys, in us)."""
    pairs = zip(hops.cpu, hops.saturated, strict=True)
    return {
        "rps": median([r.rps for r in hops.saturated]),
        "p50": median([r.p50_ms for r in hops.saturated]),
        "p99": median([r.p99_ms for r in hops.saturated]),
        "envoy_us": median([(c["caller"] + c["callee"]) / r.rps * 1e6 for c, r in pairs]),
        "paced_rps": median([r.rps for r in hops.paced]),
        "paced_p50": median([r.quantile(0.5) for r in hops.paced]),
        "paced_p90": median([r.quantile(0.9) for r in hops.paced]),
        "paced_p99": median([r.quantile(0.99) for r in hops.paced]),
    }


def report(plain: Hops, mtls: Hops, rate: int) -> None:
    base, tls = summary(plain), summary(mtls)
    for hops, f in ((plain, base), (mtls, tls)):
        rates = [r.rps for r in hops.saturated]
        print(
            f"{hops.name:9}: saturated {f['rps']:6.0f} req/s (min {min(rates):.0f}, max "
            f"{max(rates):.0f}), p50 {f['p50']:.3f} ms, p99 {f['p99']:.3f} ms, both sidecars' "
            f"CPU per request {f['envoy_us']:.0f} us | at {f['paced_rps']:.0f} req/s: p50 "
            f"{f['paced_p50']:.3f} ms, p90 {f['paced_p90']:.3f} ms, p99 {f['paced_p99']:.3f} ms"
            f" | TLS handshakes at api's inbound: {hops.handshakes()}"
        )
    cost = 1 - tls["rps"] / base["rps"]
    added = tls["paced_p50"] - base["paced_p50"]
    print(
        f"mTLS: {tls['rps'] / base['rps']:.3f} x plaintext's requests/s ({cost * 100:.1f}% "
        f"fewer; target <= {TARGET_COST * 100:.0f}%: {verdict(cost <= TARGET_COST)}), "
        f"CPU per request {tls['envoy_us'] - base['envoy_us']:+.0f} us; at {rate} "
        f"req/s p50 {added:+.3f} ms (target <= {TARGET_P50_MS} ms: "
        f"{verdict(added <= TARGET_P50_MS)}), p90 {tls['paced_p90'] - base['paced_p90']:+.3f} ms,"
        f" p99 {tls['paced_p99'] - base['paced_p99']:+.3f} ms; saturated p50 "
        f"{tls['p50'] - base['p50']:+.3f} ms, p99 {tls['p99'] - base['p99']:+.3f} ms"
    )


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ip-block", default="127.0.93", help="the mTLS mesh's 127.X.Y")
    parser.add_argument("--plain-block", default="127.0.94", help="the plaintext mesh's 127.X.Y")
    parser.add_argument("--runs", type=int, default=5, help="rounds (each measures both)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=32, help="saturating connections")
    parser.add_argument("--rate", type=int, default=1000, help="requests/s of the paced runs")
    parser.add_argument("--rate-connections", type=int, default=16, help="... their connections")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    require_tool("wrk", "wrk")
    with both_meshes(args) as paths:
        print(f"machine: {machine()}")
        for round_ in range(1, args.runs + 1):
            measure_round(round_, paths, args)
        print()
        print(f"commands per run: {paths[0].saturated[0].command}")
        print(f"                  {paths[0].paced[0].command}")
        report(*paths, args.rate)


if __name__ == "__main__":
    main()
