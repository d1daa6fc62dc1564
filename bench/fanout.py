"""Fan-out benchmark: S services and P simulated sidecars against `meshpilot serve`.

Each service has two subsets, a weighted route and two static endpoints; each sidecar is an
instance of one of them (node metadata service/ip/labels, a fake 10.x.y.z address that never
receives traffic) simulated by tests.support.simulated, in worker processes (multiprocessing),
so the simulator does not run in the control plane's process. For each size it prints:

  - initial sync: from the start of the connections until every sidecar has ACKed clusters,
    endpoints, listeners and routes (every joining sidecar changes its service's endpoints);
  - save -> all: from a save of the mesh file adding one service until every sidecar has
    received clusters that include it (median and max over --saves saves), and until every
    sidecar also has its endpoints and a new route table ("all types"); with --edit weight,
    each save changes one service's route weights instead (only the route table changes);
  - bytes per sidecar per save: the DiscoveryResponse bytes each sidecar received from the
    save until the control plane went quiet (median over the sidecars, then over the saves);
  - with --protocol (delta by default, as sidecars use): the simulated sidecars' xDS protocol;
  - with --egress K (scoping): each service calls only the next K services, and each added
    service is called by the first K services; "every sidecar" then means every sidecar of
    those callers (the others are not to receive it);
  - the control plane's RSS (now and peak, /proc/PID/status) and CPU seconds (utime + stime,
    /proc/PID/stat) per phase;
  - with --replicas N: N control planes on a local etcd (`serve --store`), on --ip and the next
    addresses, each simulator worker's sidecars streaming to one of them (worker n to replica
    n mod N, so --workers is raised to N at least); RSS and CPU are the first replica's.

Targets (issue 14): 1,000 services / 2,000 sidecars: save -> every sidecar has the change
<= 0.5 s on delta, <= 1.5 s on state of the world; <= 5 KB per sidecar for a one-service edit;
2,000 services / 10,000 sidecars on delta: <= 3 s, control plane RSS <= 1 GB, cold join <= 30 s.

    python bench/fanout.py [--sizes 100x100,1000x2000,2000x5000] [--saves 3]
    python bench/fanout.py --services 1000 --proxies 2000 --protocol sotw
    python bench/fanout.py --sizes 1000x2000 --egress 5 --edit weight
    python bench/fanout.py --sizes 1000x4000 --replicas 2   # against --sizes 1000x2000

Everything it starts is stopped on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from common import check_free, raise_exit
from harness.etcd import EtcdCluster, EtcdMember
from harness.mesh import MESHPILOT
from harness.processes import Proc, Processes
from harness.wait import http_json, wait_http_ok

from meshpilot.admin.api import parse_utc_timestamp
from meshpilot.model.names import outbound_cluster
from meshpilot.xds.types import CLUSTER, ENDPOINT, ROUTE
from tests.support import meshgen
from tests.support.meshgen import ring_callees, service_name, service_names, service_port
from tests.support.simulated import (
    Decoded,
    Protocol,
    SidecarFleet,
    SimulatedSidecar,
    fleet_specs,
)
from tests.support.wait import wait_for

XDS_PORT, ADMIN_PORT = 18000, 18001
START_TIMEOUT = 60.0
PRESETS = {"small": [(100, 100)], "medium": [(1000, 2000)], "large": [(2000, 5000)]}
DEFAULT_SIZES = "100x100,1000x2000,2000x5000"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
NEW_SERVICE_PORT = 7000
# A rough need per sidecar (control plane + simulator; measured at 1,000 services / 2,000
# delta sidecars, 2026-12-04: 0.05 MiB + 0.23 MiB; state of the world: 0.04 + 0.42), with a
# margin, to skip a size that cannot fit; --min-free-gib stops one that turns out not to.
MEMORY_PER_SIDECAR = 2**20


# --- the mesh ---------------------------------------------------------------------------------


def new_service(n: int) -> str:
    return f"svc-new-{n}"


def egress_of(index: int, services: int, egress: int, added: int) -> list[str]:
    """Service `index` calls the `egress` services after it (in a ring); the first `egress`
    services also call every added service."""
    calls = [service_name(j) for j in ring_callees(index, services, egress)]
    if index < egress:
        calls += [new_service(n) for n in range(1, added + 1)]
    return calls


def callers_of(index: int, services: int, egress: int) -> frozenset[str] | None:
    """The services whose sidecars get service `index` (an added one: -n); None: all."""
    if not egress:
        return None
    if index < 0:
        return frozenset(service_names(min(egress, services)))
    return frozenset(service_name((index - k) % services) for k in range(1, egress + 1))


def mesh_yaml(services: int, added: int = 0, egress: int = 0, reweighted: int = 0) -> str:
    """`services` synthetic services (tests.support.meshgen), then `added` more
    (svc-new-1...); with `egress`, each of the `services` calls only `egress` others (see
    egress_of); the first `reweighted` services have a v1 weight other than the default."""
    return meshgen.mesh_yaml(
        services,
        name="fanout",
        added=[(new_service(n), NEW_SERVICE_PORT + n) for n in range(1, added + 1)],
        egress=(lambda i: egress_of(i, services, egress, added)) if egress else None,
        v1_weights={i: 50 for i in range(reweighted)},
    )


# --- the simulator's worker processes ---------------------------------------------------------


@dataclass
class WorkerState:
    """What a worker watches for: a new service's cluster `watched` (None: a change of route
    weights). A sidecar has *seen* it when its clusters include it (or its route table
    changed); it is *done* when its endpoints include it too and its route table is no longer
    the one it had when the watch began."""

    watching: bool = False
    watched: str | None = None
    expected: frozenset[str] | None = None  # the services whose sidecars get it; None: all
    routes_before: dict[str, str | None] = field(default_factory=dict)  # node id -> version
    bytes_before: dict[str, int] = field(default_factory=dict)  # node id -> bytes received
    seen: dict[str, float] = field(default_factory=dict)  # node id -> time.monotonic()
    done: dict[str, float] = field(default_factory=dict)
    last_received: float = 0.0

    def expects(self, sidecar: SimulatedSidecar) -> bool:
        return self.expected is None or sidecar.spec.service in self.expected


@dataclass(frozen=True)
class WorkerArgs:
    address: str
    first: int  # index of its first sidecar
    count: int  # sidecars
    services: int
    channels: int
    protocol: Protocol


def worker_main(conn: Connection, args: WorkerArgs) -> None:
    """A worker process: `count` sidecars in one asyncio loop, driven by commands on `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    asyncio.run(_worker(conn, args))


async def _worker(conn: Connection, args: WorkerArgs) -> None:
    loop = asyncio.get_running_loop()
    state = WorkerState()

    def on_response(sidecar: SimulatedSidecar, response: Decoded) -> None:
        received = sidecar.state[response.type_url].received_at
        state.last_received = received
        node, watched = sidecar.node_id, state.watched
        if not state.watching or node in state.done or not state.expects(sidecar):
            return
        new_routes = sidecar.state[ROUTE].version != state.routes_before[node]
        if node not in state.seen and (
            watched in response.names
            if watched is not None and response.type_url == CLUSTER
            else watched is None and new_routes
        ):
            state.seen[node] = received
        if (
            node in state.seen
            and (watched is None or watched in sidecar.state[ENDPOINT].names)
            and new_routes
        ):
            state.done[node] = received

    specs = fleet_specs(args.count, service_names(args.services), args.first)
    conn.send(("ready",))
    await loop.run_in_executor(None, conn.recv)  # "start"
    async with SidecarFleet(
        args.address,
        specs,
        channels=args.channels,
        on_response=on_response,
        protocol=args.protocol,
    ) as fleet:
        while True:
            command, *args = await loop.run_in_executor(None, conn.recv)
            try:
                reply = await _command(fleet, state, command, args)
            except ConnectionError as err:
                reply = ("error", str(err))
            conn.send(reply)
            if command == "stop":
                return


async def _command(
    fleet: SidecarFleet, state: WorkerState, command: str, args: list[Any]
) -> tuple[Any, ...]:
    if command == "synced":
        ok = await fleet.wait_for(fleet.all_synced, timeout=args[0], interval=0.05)
        times = [s.synced_at for s in fleet.sidecars if s.synced_at is not None]
        return (ok, max(times, default=0.0), len(times))
    if command == "quiet":
        quiet, timeout = args

        def is_quiet() -> bool:
            return bool(time.monotonic() - state.last_received >= quiet)

        return (await fleet.wait_for(is_quiet, timeout, interval=0.05), state.last_received)
    if command == "watch":
        state.routes_before = {s.node_id: s.version(ROUTE) for s in fleet.sidecars}
        state.bytes_before = {s.node_id: s.bytes_received for s in fleet.sidecars}
        state.watched, state.expected, state.seen, state.done = args[0], args[1], {}, {}
        state.watching = True
        return ("watching",)
    if command == "received":  # bytes per watched sidecar since the watch began
        received = [
            s.bytes_received - state.bytes_before[s.node_id]
            for s in fleet.sidecars
            if state.expects(s)
        ]
        return (received,)
    if command == "done":
        total = sum(1 for s in fleet.sidecars if state.expects(s))
        ok = await fleet.wait_for(lambda: len(state.done) == total, timeout=args[0])
        seen, done = state.seen.values(), state.done.values()
        return (ok, max(seen, default=0.0), max(done, default=0.0), len(state.done))
    if command in ("stats", "stop"):
        examples = [e for s in fleet.sidecars for e in s.violation_examples][:3]
        return (fleet.violations, examples, fleet.stream_errors, rss_kib(os.getpid())[0])
    raise ValueError(f"unknown command {command!r}")


class OutOfMemory(Exception):
    """The machine's available memory fell below the floor: this size does not fit."""


class Workers:
    """The simulator's processes; `ask` sends a command to all and returns their replies."""

    def __init__(
        self,
        count: int,
        addresses: list[str],
        services: int,
        proxies: int,
        channels: int,
        protocol: Protocol,
        min_available: float,
    ) -> None:
        self.min_available = min_available  # bytes of MemAvailable below which to give up
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        share, extra = divmod(proxies, count)
        first = 0
        for n in range(count):
            size = share + (1 if n < extra else 0)
            parent, child = context.Pipe()
            address = addresses[n % len(addresses)]
            worker = WorkerArgs(address, first, size, services, channels, protocol)
            proc = context.Process(
                target=worker_main,
                args=(child, worker),
                name=f"fanout-worker-{n}",
                daemon=True,
            )
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
            first += size

    def ask(self, command: tuple[Any, ...], alive: Proc, timeout: float) -> list[tuple[Any, ...]]:
        for conn in self.conns:
            conn.send(command)
        return self.replies(command[0], alive, timeout)

    def replies(self, what: str, alive: Proc, timeout: float) -> list[tuple[Any, ...]]:
        """One reply from every worker (to the command `what`), while the control plane
        `alive` runs and the machine has memory left."""

        def fits() -> None:
            if mem_available() < self.min_available:
                gib = self.min_available / 2**30
                raise OutOfMemory(f"stopped: less than {gib:.1f} GiB of memory left")
            if not alive.alive():
                raise RuntimeError(f"the control plane exited ({alive.returncode})")

        replies = []
        deadline = time.monotonic() + timeout
        for conn in self.conns:
            left = max(0.0, deadline - time.monotonic())
            message = f"a reply from a worker to {what!r}"
            wait_for(lambda c=conn: c.poll(0.2), left, 0.0, message, check=fits)
            reply = conn.recv()
            if reply[0] == "error":
                raise RuntimeError(f"worker: {reply[1]}")
            replies.append(reply)
        return replies

    def start(self) -> None:
        for conn in self.conns:
            conn.send(("start",))

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()


# --- the control plane's resources ------------------------------------------------------------


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# --- one size ---------------------------------------------------------------------------------


@dataclass
class Result:
    services: int
    proxies: int
    start: str  # cold: the sidecars join the full mesh; warm: a one-service mesh, then the full
    protocol: Protocol = "delta"
    edit: str = "add"  # what each save does: add a service, or change one's route weights
    egress: int = 0  # each service calls this many others (0: every service)
    join: float = float("nan")  # start of the connections -> every sidecar ACKed all four types
    full_push: tuple[float, float] | None = (
        None  # warm: save of the full mesh -> all have it, last push
    )
    fanout: list[float] = field(default_factory=list)  # save -> every sidecar has the service
    settled: list[float] = field(default_factory=list)  # save -> endpoints and routes too
    applied: list[float] = field(default_factory=list)  # save -> applied (/mesh applied_at)
    received: list[float] = field(default_factory=list)  # median bytes per sidecar, per save
    rss_idle: int = 0
    rss_synced: int = 0
    rss_end: int = 0
    rss_peak: int = 0
    cpu_join: float = 0.0
    cpu_saves: float = 0.0
    sim_cpu_join: float = 0.0  # the simulator's worker processes
    sim_cpu_saves: float = 0.0
    worker_rss: int = 0
    violations: int = 0
    stream_failures: int = 0  # streams that failed; the sidecars opened new ones, as Envoy does
    note: str = ""
    join_timed_out: bool = False

    @property
    def joined(self) -> bool:
        return self.join == self.join  # not NaN


@dataclass
class Bench:
    """One size's control plane, mesh file and simulator."""

    args: argparse.Namespace
    mesh: Path
    admin: str
    control_plane: Proc
    workers: Workers

    def ask(self, command: tuple[Any, ...], timeout: float) -> list[tuple[Any, ...]]:
        return self.workers.ask(command, self.control_plane, timeout + 30)

    def wait_quiet(self) -> float:
        """Wait until no sidecar received anything for --quiet seconds; the last receipt."""
        replies = self.ask(("quiet", self.args.quiet, self.args.join_timeout), 600)
        return float(max(r[1] for r in replies))

    def save(
        self, text: str, watched: str | None, expected: frozenset[str] | None
    ) -> tuple[float, float, float, float] | None:
        """Save `text`; seconds until every sidecar (of the `expected` services; None: all)
        received clusters including `watched` (None: a new route table), until each also has
        its endpoints and a new route table, and until the control plane applied the file; and
        the median bytes a sidecar received until the control plane went quiet (None: not in
        time)."""
        self.ask(("watch", watched, expected), 30)
        saved_wall, saved = time.time(), time.monotonic()
        self.mesh.write_text(text)
        replies = self.ask(("done", self.args.save_timeout), self.args.save_timeout)
        if not all(r[0] for r in replies):
            return None
        clusters = max(r[1] for r in replies) - saved
        everything = max(r[2] for r in replies) - saved
        applied_at = parse_utc_timestamp(http_json(f"{self.admin}/mesh")["applied_at"])
        applied = applied_at - saved_wall
        self.wait_quiet()
        received = [n for reply in self.ask(("received",), 30) for n in reply[0]]
        return clusters, everything, applied, statistics.median(received)


def run_size(
    args: argparse.Namespace, services: int, proxies: int, start: str, tmp: Path
) -> Result:
    result = Result(services, proxies, start, args.protocol, args.edit, args.egress)
    ips = replica_ips(args.ip, args.replicas)
    for ip in ips:
        check_free(ip, [XDS_PORT, ADMIN_PORT], "--ip")
    mesh = tmp / "mesh.yaml"
    egress = args.egress
    # warm: one service, unscoped (a scoped proxy that calls nothing never asks for endpoints)
    mesh.write_text(mesh_yaml(services, egress=egress) if start == "cold" else mesh_yaml(1))
    admin = f"http://{args.ip}:{ADMIN_PORT}"
    procs = Processes(tmp / "logs")
    workers: Workers | None = None
    try:
        store = start_store(procs, args.ip, tmp) if args.replicas > 1 else None
        control_plane = start_replicas(procs, mesh, ips, store)
        result.rss_idle = rss_kib(pid := control_plane.pid)[0]
        min_available = args.min_free_gib * 2**30
        xds = [f"{ip}:{XDS_PORT}" for ip in ips]
        count = max(args.workers, args.replicas)
        workers = Workers(
            count, xds, services, proxies, args.channels, args.protocol, min_available
        )
        bench = Bench(args, mesh, admin, control_plane, workers)
        workers.replies("ready", control_plane, START_TIMEOUT)  # imported, specs built
        cpu_before, sim_before = cpu_seconds(pid), workers.cpu_seconds()
        started = time.monotonic()
        workers.start()
        replies = bench.ask(("synced", args.join_timeout), args.join_timeout)
        if not all(r[0] for r in replies):
            synced = sum(r[2] for r in replies)
            result.note = f"{start} join: {synced}/{proxies} synced after {args.join_timeout:.0f} s"
            result.join_timed_out = True
            result.rss_end, result.rss_peak = rss_kib(pid)
            return result
        result.join = max(r[1] for r in replies) - started
        print(f"  {start} join: every sidecar synced after {result.join:.2f} s", flush=True)
        bench.wait_quiet()
        if start == "warm":
            last = services - 1  # its clusters come with the full mesh
            watched = outbound_cluster(service_name(last), service_port(last))
            expected = callers_of(last, services, egress)
            full = bench.save(mesh_yaml(services, egress=egress), watched, expected)
            if full is None:
                result.note = "the full mesh did not reach every sidecar in time"
                return result
            result.full_push = full[:2]
            print(
                f"  full mesh: every sidecar has its clusters after {full[0]:.3f} s, "
                f"endpoints and routes too after {full[1]:.3f} s",
                flush=True,
            )
        result.cpu_join = cpu_seconds(pid) - cpu_before
        result.sim_cpu_join = workers.cpu_seconds() - sim_before
        result.rss_synced = rss_kib(pid)[0]

        cpu_before, sim_before = cpu_seconds(pid), workers.cpu_seconds()
        for n in range(1, args.saves + 1):
            if args.edit == "add":
                name: str | None = outbound_cluster(new_service(n), NEW_SERVICE_PORT + n)
                text = mesh_yaml(services, added=n, egress=egress)
                expected, change = callers_of(-n, services, egress), f"has {new_service(n)}"
            else:
                name, text = None, mesh_yaml(services, egress=egress, reweighted=n)
                expected, change = callers_of(n - 1, services, egress), "has the new weights"
            measured = bench.save(text, name, expected)
            if measured is None:
                result.note = f"save {n}: not every sidecar had the change in time"
                break
            result.fanout.append(measured[0])
            result.settled.append(measured[1])
            result.applied.append(measured[2])
            result.received.append(measured[3])
            print(
                f"  save {n}: every sidecar {change} after {measured[0]:.3f} s "
                f"(applied after {measured[2]:.3f} s; endpoints and routes too after "
                f"{measured[1]:.3f} s; {measured[3]:.0f} bytes received per sidecar)",
                flush=True,
            )
        result.cpu_saves = cpu_seconds(pid) - cpu_before
        result.sim_cpu_saves = workers.cpu_seconds() - sim_before
        result.rss_end, result.rss_peak = rss_kib(pid)
        stats = bench.ask(("stop",), 60)
        result.violations = sum(s[0] for s in stats)
        result.stream_failures = sum(s[2] for s in stats)
        result.worker_rss = max(s[3] for s in stats)
        if result.violations:
            print(f"  violations, e.g.: {[e for s in stats for e in s[1]][:3]}")
        return result
    except OutOfMemory as err:
        result.note = f"{err} (control plane RSS {rss_kib(pid)[0] / 2**20:.1f} GiB)"
        result.rss_end, result.rss_peak = rss_kib(pid)
        return result
    except BaseException:
        print(procs.tails(), file=sys.stderr)
        raise
    finally:
        if workers is not None:
            workers.stop()
        procs.stop_all()
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            for log in (tmp / "logs").glob("*.log"):
                log.replace(args.logs / f"{services}x{proxies}-{start}-{log.name}")


def replica_ips(first: str, count: int) -> list[str]:
    """`first`, then the next addresses of its /24."""
    prefix, _, host = first.rpartition(".")
    return [f"{prefix}.{int(host) + n}" for n in range(count)]


def start_store(procs: Processes, ip: str, tmp: Path) -> str:
    """A one-member etcd on `ip` for the replicas; its `--store` URL."""
    etcd = EtcdCluster(procs, [EtcdMember("bench", ip, tmp / "etcd")])
    etcd.start()
    return etcd.url


def start_replicas(procs: Processes, mesh: Path, ips: list[str], store: str | None) -> Proc:
    """A control plane on each of `ips` (on `store`, if given), once each answers; the first."""
    started = []
    for n, ip in enumerate(ips):
        # simulated sidecars: plaintext, all from one address
        argv = [MESHPILOT, "serve", str(mesh), "--xds", f"{ip}:{XDS_PORT}", "--insecure"]
        argv += ["--peer-max-streams", "0", "--peer-stream-rate", "0"]
        argv += ["--admin", f"{ip}:{ADMIN_PORT}", *(["--store", store] if store else [])]
        proc = procs.start("controlplane" if n == 0 else f"controlplane-{n + 1}", argv)
        wait_http_ok(f"http://{ip}:{ADMIN_PORT}/healthz", START_TIMEOUT, procs=[proc])
        started.append(proc)
    return started[0]


# --- output -----------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


HEADER = (
    "| services | sidecars | protocol | edit | egress | start | join s "
    "| full mesh s (clusters / all types) "
    "| save -> all have it s (median / max) | save -> applied s "
    "| save -> all types s (median / max) | bytes per sidecar per save "
    "| CP RSS MiB idle / synced / end / peak | CP CPU s join / saves "
    "| simulator CPU s join / saves | worker RSS MiB | violations | failed streams |"
)


def table_row(r: Result) -> str:
    full = f"{r.full_push[0]:.3f} / {r.full_push[1]:.3f}" if r.full_push else "-"
    fan = f"{statistics.median(r.fanout):.3f} / {max(r.fanout):.3f}" if r.fanout else "-"
    applied = f"{statistics.median(r.applied):.3f}" if r.applied else "-"
    settled = f"{statistics.median(r.settled):.3f} / {max(r.settled):.3f}" if r.settled else "-"
    received = f"{statistics.median(r.received):.0f}" if r.received else "-"
    rss = " / ".join(mib(v) for v in (r.rss_idle, r.rss_synced, r.rss_end, r.rss_peak))
    row = (
        f"| {r.services} | {r.proxies} | {r.protocol} | {r.edit} | {r.egress or 'all'} "
        f"| {r.start} | {r.join:.2f} | {full} | {fan} "
        f"| {applied} | {settled} | {received} | {rss} | {r.cpu_join:.1f} / {r.cpu_saves:.1f} "
        f"| {r.sim_cpu_join:.1f} / {r.sim_cpu_saves:.1f} "
        f"| {mib(r.worker_rss)} | {r.violations} | {r.stream_failures} |"
    )
    return row + (f"\n  note ({r.services}x{r.proxies}, {r.start}): {r.note}" if r.note else "")


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print()
    print(
        f"{os.cpu_count()} cores, shared by the control plane and the simulator "
        f"({args.workers} worker processes, {args.channels} gRPC channels each): "
        "the figures include the simulator's own CPU use competing with the control plane."
    )
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for result in results:
        print(table_row(result))
    print(
        "cold: the sidecars join the full mesh; warm: they join a one-service mesh, then the "
        "full mesh is saved. Targets at 1,000 services / 2,000 sidecars: save -> all types "
        "<= 0.5 s on delta, <= 1.5 s on sotw (max over saves, debounce and translation "
        "included); <= 5 KB per sidecar for a one-service edit. 2,000 / 10,000 on delta: "
        "<= 3 s, control plane RSS <= 1 GB, cold join <= 30 s."
    )


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        if item in PRESETS:
            sizes += PRESETS[item]
        else:
            services, _, proxies = item.partition("x")
            sizes.append((int(services), int(proxies)))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"SxP,... or presets {', '.join(PRESETS)} (default {DEFAULT_SIZES})",
    )
    parser.add_argument("--services", type=int, help="one size: this many services")
    parser.add_argument("--proxies", type=int, help="one size: this many sidecars")
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument(
        "--protocol",
        choices=("delta", "sotw"),
        default="delta",
        help="the simulated sidecars' xDS protocol (default delta, as sidecars use)",
    )
    parser.add_argument(
        "--edit",
        choices=("add", "weight"),
        default="add",
        help="what each save does: add a service (its clusters, endpoints and route), or "
        "change one service's route weights (the route table only)",
    )
    parser.add_argument("--workers", type=int, default=2, help="simulator processes")
    parser.add_argument("--channels", type=int, default=16, help="gRPC channels per worker")
    parser.add_argument("--ip", default="127.0.88.1", help="the control plane's loopback IP")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="control planes on a local etcd (on --ip and the next addresses), the sidecars "
        "split over them by worker",
    )
    parser.add_argument(
        "--start",
        choices=("cold", "warm", "both"),
        default="cold",
        help="cold: join the full mesh (a warm start follows if the join times out); "
        "warm: join a one-service mesh, then save the full mesh",
    )
    parser.add_argument(
        "--egress",
        type=int,
        default=0,
        help="scoping: each service calls only this many others (the next ones), and each "
        "added service is called by the first this-many services, whose sidecars are the "
        "ones measured (default 0: no scoping, every sidecar gets every service)",
    )
    parser.add_argument("--join-timeout", type=float, default=300.0)
    parser.add_argument("--save-timeout", type=float, default=120.0)
    parser.add_argument("--quiet", type=float, default=2.0, help="seconds without a push")
    parser.add_argument(
        "--min-free-gib",
        type=float,
        default=3.0,
        help="stop a size when the machine's available memory falls below this",
    )
    parser.add_argument("--logs", type=Path, help="keep the control plane's log in this directory")
    args = parser.parse_args()
    if (args.services is None) != (args.proxies is None):
        parser.error("--services and --proxies go together")
    sizes = [(args.services, args.proxies)] if args.services else parse_sizes(args.sizes)
    signal.signal(signal.SIGTERM, raise_exit)
    results = []
    for services, proxies in sizes:
        needed = proxies * MEMORY_PER_SIDECAR
        if mem_available() < needed:
            print(f"{services}x{proxies}: skipped, needs ~{needed / 2**30:.1f} GiB of memory")
            continue
        starts = ["cold", "warm"] if args.start == "both" else [args.start]
        while starts:
            start = starts.pop(0)
            print(f"{services} services / {proxies} sidecars, {start} start:", flush=True)
            with tempfile.TemporaryDirectory(prefix="meshpilot-fanout-") as tmp:
                result = run_size(args, services, proxies, start, Path(tmp))
            results.append(result)
            print(f"  {table_row(result)}", flush=True)
            if result.join_timed_out and start == "cold" and args.start == "cold":
                print(f"  {result.note}; measuring the saves after a warm start")
                starts.append("warm")
    print_table(results, args)


if __name__ == "__main__":
    main()
