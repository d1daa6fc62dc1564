"""Sidecars joining at once: how long until N simulated sidecars all hold a workload certificate
(issue 12's target: 2,000 within 10 s).

Each run starts a fresh secure `meshpilot serve` (its own state directory), mints one join token
per simulated sidecar (as `meshpilot up` gives every replica its own), then starts them all at
the same moment. A simulated sidecar is the real agent without Envoy: `CertificateClient` +
`IdentityAgent.first_credentials()` (its retries included), so each one reads the pinned CA from
a TLS handshake, opens its own TLS channel, makes its P-256 key and CSR, sends it with its token
and checks the chain it gets back. They run as asyncio tasks in `--workers` processes on the
same cores as the control plane. Timed from the start signal until the last one holds its
certificate; medians over runs.

    python bench/join.py [--ip-block 127.0.95] [--sidecars 2000] [--workers 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import sys
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataplane import XDS_PORT, World, cpu_seconds, group_members, machine, median, world

from meshpilot.identity.authority import open_token_authority
from meshpilot.identity.client import CertificateClient, IdentityAgent

TARGET_S = 10.0
RESULT_TIMEOUT_S = 300.0


# --- in each worker process -------------------------------------------------------------------


class Counter(logging.Handler):
    """Counts the agents' warnings (each one is a retry of a first certificate)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


async def join(client: CertificateClient) -> float:
    """The real first join of a sidecar's agent; when it holds its certificate (monotonic)."""
    await IdentityAgent(client).first_credentials()
    return time.monotonic()


async def join_all(address: str, tokens: list[str], barrier: Barrier) -> list[float | str]:
    clients = [CertificateClient(address, token) for token in tokens]
    await asyncio.to_thread(barrier.wait)  # every worker ready: the parent starts the clock
    try:
        done = await asyncio.gather(*(join(c) for c in clients), return_exceptions=True)
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    return [t if isinstance(t, float) else repr(t) for t in done]


def worker(address: str, tokens: list[str], barrier: Barrier, results: Any) -> None:
    counter = Counter()
    logging.getLogger("meshpilot.identity").addHandler(counter)
    logging.getLogger("meshpilot.identity").propagate = False
    done = asyncio.run(join_all(address, tokens, barrier))
    results.put((done, counter.count))


# --- in the benchmark's process ---------------------------------------------------------------


@dataclass
class JoinRun:
    seconds_all: float  # start -> the last sidecar holds its certificate
    seconds_median: float
    failures: list[str]
    retries: int
    control_plane_cpu: float  # CPU seconds of `meshpilot serve` during the join


def mesh_text(services: int) -> str:
    lines = ["mesh: bench-join", "services:"]
    lines += [f"  svc{i}: {{port: 8080}}" for i in range(services)]
    return "\n".join(lines) + "\n"


def mint_tokens(w: World, sidecars: int, services: int) -> list[str]:
    authority = open_token_authority(w.state_dir)
    return [authority.issue(f"svc{i % services}", {"version": "v1"}) for i in range(sidecars)]


def run_once(w: World, args: argparse.Namespace) -> JoinRun:
    w.write_mesh(mesh_text(args.services))
    w.start_control_plane()
    assert w.control_plane is not None
    cp_pids = group_members(w.control_plane.pid)
    tokens = mint_tokens(w, args.sidecars, args.services)
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(args.workers + 1), ctx.Queue()
    address = f"{w.cp_ip}:{XDS_PORT}"
    procs = [
        ctx.Process(target=worker, args=(address, tokens[i :: args.workers], barrier, results))
        for i in range(args.workers)
    ]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=60)
        start, cpu_before = time.monotonic(), cpu_seconds(cp_pids)
        outcomes = [results.get(timeout=RESULT_TIMEOUT_S) for _ in procs]
        cpu = cpu_seconds(cp_pids) - cpu_before
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    done = [t for times, _ in outcomes for t in times]
    finished = [t - start for t in done if isinstance(t, float)]
    return JoinRun(
        seconds_all=max(finished) if len(finished) == len(done) else float("inf"),
        seconds_median=median(finished) if finished else float("inf"),
        failures=[t for t in done if isinstance(t, str)],
        retries=sum(retries for _, retries in outcomes),
        control_plane_cpu=cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ip-block", default="127.0.95", help="first three octets (127.X.Y)")
    parser.add_argument("--sidecars", type=int, default=2000)
    parser.add_argument("--services", type=int, default=20, help="the sidecars' services")
    parser.add_argument("--workers", type=int, default=4, help="processes of simulated sidecars")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    runs = []
    for number in range(1, args.runs + 1):
        with world(args.ip_block, args.keep_logs, secure=True) as w:
            run = run_once(w, args)
        runs.append(run)
        print(
            f"run {number}: all {args.sidecars} hold certificates after {run.seconds_all:.2f} s "
            f"(half after {run.seconds_median:.2f} s; {args.sidecars / run.seconds_all:.0f} "
            f"joins/s), {len(run.failures)} failed, {run.retries} retries, control plane CPU "
            f"{run.control_plane_cpu:.1f} s {run.failures[:3]}",
            flush=True,
        )
    seconds = median([r.seconds_all for r in runs])
    print(
        f"{args.sidecars} sidecars in {args.workers} processes, {args.services} services: all "
        f"hold certificates after {seconds:.2f} s, median of {args.runs} runs "
        f"(min {min(r.seconds_all for r in runs):.2f}, max {max(r.seconds_all for r in runs):.2f});"
        f" target <= {TARGET_S:.0f} s: {'met' if seconds <= TARGET_S else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
