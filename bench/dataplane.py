"""Data-plane benchmark: requests/s through one real Envoy sidecar, by policy kind.

wrk -> the `api` sidecar's inbound port (IP:15006) -> a fast app, with
  - none:   no policy at all;
  - static: an `allow` and a `deny` policy on `api` (Envoy's RBAC filter, no mixer call);
  - custom: a `custom` policy whose hook is `return True` (ext_authz to `meshpilot mixer`).
The configurations take turns, round after round (a live save of the mesh file between them,
each time waiting until the sidecar's new inbound listener is in force and the old one drained),
so slow drifts of the machine hit all of them alike. Target: static <= 15% slower than none.

    python bench/dataplane.py [--ip-block 127.0.92] [--runs 5] [--seconds 8] [--connections 32]

Load comes from `wrk` (apt-get install wrk): a Python client cannot saturate Envoy. The app is
`python bench/dataplane.py app IP PORT`, an asyncio responder that answers every request with a
fixed 200 (GET only, no bodies); e2e/app.py (threaded http.server) would be the bottleneck.

This file also holds what bench/authz.py and bench/als.py share: the processes of a small mesh
on one loopback block, the wrk and h2load runners, Envoy stats and CPU accounting. Everything a
benchmark starts is stopped on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from common import check_free, raise_exit
from harness.mesh import (
    ADMIN_PORT,
    ENVOY_ADMIN_PORT,
    INBOUND_PORT,
    MESHPILOT,
    MIXER_GRPC_PORT,
    MIXER_HTTP_PORT,
    OUTBOUND_PORT,
    SIDECAR_PORTS,
    XDS_PORT,
    accepts_connections,
)
from harness.processes import Proc, Processes, group_members
from harness.wait import http_get, http_json, wait_envoy_live, wait_for, wait_http_ok

from meshpilot.identity.authority import open_token_authority
from meshpilot.identity.state import private_dir, write_file
from meshpilot.model.names import MIXER_SERVICE

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
APP_PORT = 8080
START_TIMEOUT = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


# --- the app ----------------------------------------------------------------------------------

RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n"
END_OF_HEAD = b"\r\n\r\n"


class Responder(asyncio.Protocol):
    """A fixed 200 for every request head received (keep-alive, pipelining; no bodies)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        heads = data.count(END_OF_HEAD)
        if heads:
            self.transport.write(RESPONSE * heads)
            data = data[data.rfind(END_OF_HEAD) + len(END_OF_HEAD) :]
        self.pending = data


def serve_app(ip: str, port: int) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = await loop.create_server(Responder, ip, port, backlog=4096, reuse_address=True)
        async with server:
            await stop.wait()

    asyncio.run(main())


# --- processes of a small mesh on one loopback block -----------------------------------------


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} not found: apt-get update && apt-get install -y {package}")
    return path


@dataclass
class Instance:
    service: str
    version: str
    ip: str
    sidecar: Proc
    app: Proc | None

    @property
    def node_id(self) -> str:
        return f"{self.service}~{self.ip}"

    @property
    def admin(self) -> str:
        return f"http://{self.ip}:{ENVOY_ADMIN_PORT}"

    @property
    def inbound_url(self) -> str:
        return f"http://{self.ip}:{INBOUND_PORT}/"

    @property
    def outbound_url(self) -> str:
        return f"http://{self.ip}:{OUTBOUND_PORT}/"


class World:
    """Control plane on .1, mixer on .2, instances from .10 of one 127.X.Y block.

    `secure`: as `meshpilot serve` runs by default (TLS on the xDS port, every sidecar and the
    mixer joining with a token minted here, mTLS between them); else the control plane and the
    mixer run `--insecure` (plaintext everywhere, as before issue 12). The CA and token keys
    live in the world's own state directory either way."""

    def __init__(self, block: str, procs: Processes, tmp: Path, secure: bool = False) -> None:
        self.block, self.procs, self.tmp, self.secure = block, procs, tmp, secure
        self.mesh_path = tmp / "mesh.yaml"
        self.state_dir = tmp / "state"
        self.cp_ip, self.mixer_ip = f"{block}.1", f"{block}.2"
        self.control_plane: Proc | None = None
        self.mixer: Proc | None = None
        self.instances: list[Instance] = []
        check_free(self.cp_ip, [XDS_PORT, ADMIN_PORT])
        check_free(self.mixer_ip, [MIXER_GRPC_PORT, MIXER_HTTP_PORT])

    @property
    def mixer_grpc(self) -> str:
        return f"{self.mixer_ip}:{MIXER_GRPC_PORT}"

    @property
    def mixer_metrics_url(self) -> str:
        return f"http://{self.mixer_ip}:{MIXER_HTTP_PORT}/metrics"

    @property
    def admin_url(self) -> str:
        return f"http://{self.cp_ip}:{ADMIN_PORT}"

    def write_mesh(self, text: str) -> None:
        self.mesh_path.write_text(textwrap.dedent(text).lstrip())

    def watched(self) -> list[Proc]:
        procs = [self.control_plane, self.mixer]
        procs += [i.sidecar for i in self.instances] + [i.app for i in self.instances]
        return [p for p in procs if p is not None]

    def start_control_plane(self) -> None:
        argv = [MESHPILOT, "serve", str(self.mesh_path), "--xds", f"{self.cp_ip}:{XDS_PORT}"]
        argv += ["--admin", f"{self.cp_ip}:{ADMIN_PORT}", "--state-dir", str(self.state_dir)]
        argv += [] if self.secure else ["--insecure"]
        self.control_plane = self.procs.start("controlplane", argv, cwd=self.tmp)
        wait_http_ok(f"{self.admin_url}/healthz", START_TIMEOUT, procs=[self.control_plane])

    def start_mixer(self, workers: int) -> Proc:
        argv = [MESHPILOT, "mixer", str(self.mesh_path), "--listen", self.mixer_grpc]
        argv += ["--metrics", f"{self.mixer_ip}:{MIXER_HTTP_PORT}", "--workers", str(workers)]
        if self.secure:
            argv += ["--token-file", str(self.token_file(MIXER_SERVICE, {}, self.mixer_ip))]
            argv += ["--xds", f"{self.cp_ip}:{XDS_PORT}"]
        else:
            argv += ["--insecure"]
        self.mixer = self.procs.start(f"mixer-{workers}w", argv, cwd=self.tmp)
        wait_http_ok(self.mixer_metrics_url, START_TIMEOUT, procs=[self.mixer])
        wait_for(
            lambda: (
                len(mixer_workers(self.mixer)) >= workers
                and accepts_connections(self.mixer_ip, MIXER_GRPC_PORT)
            ),
            START_TIMEOUT,
            message="mixer workers to listen",
            ignore=(OSError,),
            procs=[self.mixer],
        )
        return self.mixer

    def stop_mixer(self) -> None:
        if self.mixer is not None:
            self.procs.stop(self.mixer)
            self.mixer = None

    def start_instance(self, service: str, version: str, n: int, app: bool = True) -> Instance:
        ip = f"{self.block}.{n}"
        check_free(ip, [*SIDECAR_PORTS, APP_PORT])
        app_proc = None
        if app:
            argv = [sys.executable, __file__, "app", ip, str(APP_PORT)]
            app_proc = self.procs.start(f"app-{service}-{ip}", argv)
            wait_http_ok(f"http://{ip}:{APP_PORT}/", START_TIMEOUT, procs=[app_proc])
        argv = [MESHPILOT, "sidecar", "--service", service, "--version", version, "--ip", ip]
        argv += ["--app-port", str(APP_PORT), "--xds", f"{self.cp_ip}:{XDS_PORT}"]
        if self.secure:
            token = self.token_file(service, {"version": version}, ip)
            argv += ["--token-file", str(token)]
        sidecar = self.procs.start(f"sidecar-{service}-{ip}", argv)
        instance = Instance(service, version, ip, sidecar, app_proc)
        wait_envoy_live(instance.admin, START_TIMEOUT, procs=[sidecar])
        self.instances.append(instance)
        return instance

    def token_file(self, service: str, labels: dict[str, str], ip: str) -> Path:
        """A file (0600) holding a join token for `service` with exactly `labels`."""
        token = open_token_authority(self.state_dir).issue(service, labels)
        path = private_dir(self.tmp / "tokens") / f"{service}-{ip}"
        write_file(path, token.encode(), secret=True)
        return path

    def listener_versions(self) -> dict[str, str]:
        proxies = http_json(f"{self.admin_url}/proxies")
        return {p["node_id"]: p["types"].get(LISTENER, {}).get("acked_version") for p in proxies}

    def apply(self, text: str) -> None:
        """Save the mesh file and wait until every instance's sidecar ACKed new listeners, has
        no listener draining any more, and its control-plane state is SYNCED."""
        text = textwrap.dedent(text).lstrip()
        if self.mesh_path.exists() and self.mesh_path.read_text() == text:
            return
        before = self.listener_versions()
        self.mesh_path.write_text(text)

        def applied() -> bool:
            proxies = {p["node_id"]: p for p in http_json(f"{self.admin_url}/proxies")}
            for instance in self.instances:
                proxy = proxies.get(instance.node_id)
                if proxy is None or any(t["status"] != "SYNCED" for t in proxy["types"].values()):
                    return False
                if proxy["types"][LISTENER]["acked_version"] == before.get(instance.node_id):
                    return False
                if envoy_stats(instance.ip, "total_listeners_draining").get(DRAINING, 1) != 0:
                    return False
            return True

        wait_for(applied, START_TIMEOUT, message="the mesh change in force", procs=self.watched())


DRAINING = "listener_manager.total_listeners_draining"


def mixer_workers(mixer: Proc | None) -> list[int]:
    """Pids of the mixer's worker processes (its multiprocessing children that run Python with
    `spawn_main`), in start order."""
    if mixer is None:
        return []
    pids = []
    for pid in group_members(mixer.pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"pipe_handle" in cmdline:
                pids.append(pid)
    return sorted(pids)


# --- measuring --------------------------------------------------------------------------------


def envoy_stats(ip: str, regex: str) -> dict[str, int]:
    """Counters and gauges of the Envoy whose admin is at IP:15000 whose name matches regex."""
    text = http_get(f"http://{ip}:{ENVOY_ADMIN_PORT}/stats?filter={regex}", timeout=5.0).text
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.isdigit():
            stats[name] = int(value)
    return stats


def envoy_histogram_buckets(ip: str, name: str) -> dict[float, int]:
    """Cumulative detailed buckets (lower bound -> count) of one Envoy histogram; subtract two
    readings to get the distribution of what happened in between."""
    url = f"http://{ip}:{ENVOY_ADMIN_PORT}/stats?format=json&histogram_buckets=detailed"
    data = http_json(f"{url}&filter=^{re.escape(name)}$", timeout=5.0)
    for stat in data.get("stats", []):
        histograms = stat.get("histograms") or {}
        for detail in histograms.get("details", []):
            if detail.get("name") == name:
                return {float(b["lower_bound"]): int(b["count"]) for b in detail["totals"]}
    return {}


def histogram_quantiles(
    before: dict[float, int], after: dict[float, int], quantiles: Sequence[float]
) -> tuple[int, list[float]]:
    """(count, quantile lower bounds) of the observations between two bucket readings."""
    delta = sorted((bound, after[bound] - before.get(bound, 0)) for bound in after)
    delta = [(bound, count) for bound, count in delta if count > 0]
    total = sum(count for _, count in delta)
    values = []
    for q in quantiles:
        rank, seen = q * total, 0
        value = delta[-1][0] if delta else float("nan")
        for bound, count in delta:
            seen += count
            if seen >= rank:
                value = bound
                break
        values.append(value)
    return total, values


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of live processes (gone ones count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def children_seconds() -> float:
    """CPU seconds of the child processes this process has waited for (wrk, h2load)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU used between `start()` and `stop()`, in cores: by named groups of processes, by the
    load generator (children waited for meanwhile), by this process ("bench") and by
    everything else on the machine ("others": other users of this machine disturb figures)."""

    def __init__(self, groups: dict[str, Callable[[], Sequence[int]]]) -> None:
        self.groups = groups
        self._pids: dict[str, Sequence[int]] = {}
        self._start: dict[str, float] = {}
        self._t0 = 0.0

    def start(self) -> None:
        self._pids = {name: pids() for name, pids in self.groups.items()}
        self._start = {name: cpu_seconds(p) for name, p in self._pids.items()}
        self._start["load"] = children_seconds()
        self._start["bench"] = self_seconds()
        self._start["machine"] = machine_busy_seconds()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t0
        used = {name: cpu_seconds(pids) for name, pids in self._pids.items()}
        used["load"] = children_seconds()
        used["bench"] = self_seconds()
        cores = {name: (used[name] - self._start[name]) / elapsed for name in used}
        machine = (machine_busy_seconds() - self._start["machine"]) / elapsed
        cores["others"] = max(0.0, machine - sum(cores.values()))
        return cores


DISTURBED = 0.3  # cores used meanwhile by other processes on the machine that void a run
RETRIES = 3


def wait_quiet(limit: float = DISTURBED, timeout: float = 60.0) -> float:
    """Wait until the machine was less than `limit` cores busy over one second (the benchmark's
    own processes are idle between runs); returns the last reading."""
    deadline = time.monotonic() + timeout
    while True:
        before = machine_busy_seconds()
        time.sleep(1.0)  # the window the machine's CPU use is measured over, not a wait
        busy = machine_busy_seconds() - before
        if busy < limit or time.monotonic() > deadline:
            return busy


def undisturbed(measure: Callable[[], tuple[T, dict[str, float]]]) -> tuple[T, dict[str, float]]:
    """Run `measure` (returning a result and CpuMeter cores) once the machine is quiet, and
    again, up to RETRIES times, when other processes used more than DISTURBED cores meanwhile."""
    for attempt in range(RETRIES + 1):
        wait_quiet()
        result, cores = measure()
        if cores.get("others", 0.0) <= DISTURBED or attempt == RETRIES:
            return result, cores
        print(f"      (disturbed: others used {cores['others']:.2f} cores; measuring again)")
    raise AssertionError("unreachable")


def format_cpu(cores: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in cores.items())


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    command: str


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk_command(
    url: str, seconds: float, connections: int, threads: int = 1, headers: Sequence[str] = ()
) -> list[str]:
    argv = [require_tool("wrk", "wrk"), "-t", str(threads), "-c", str(connections)]
    argv += ["-d", f"{seconds:g}s", "--latency"]
    for header in headers:
        argv += ["-H", header]
    return [*argv, url]


def wrk(
    url: str, seconds: float, connections: int, threads: int = 1, headers: Sequence[str] = ()
) -> WrkResult:
    """Closed-loop load: `connections` keep-alive connections each sending back to back."""
    argv = wrk_command(url, seconds, connections, threads, headers)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out, argv)


def parse_wrk(out: str, argv: Sequence[str]) -> WrkResult:
    requests, secs, unit = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out).groups()  # type: ignore[union-attr]
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    elapsed = float(secs) * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
    return WrkResult(
        requests=int(requests),
        seconds=elapsed,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        command=" ".join(["wrk", *argv[1:]]),
    )


POISSON_LUA = """
-- After each response a connection waits an exponentially distributed time (mean: the first
-- script argument, in ms) before its next request: with many connections, arrivals are close
-- to a Poisson process at connections / mean. Prints extra percentiles (microseconds).
local mean = 50
function init(args)
  mean = tonumber(args[1]) or mean
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6))
end
function delay()
  return math.floor(-math.log(1 - math.random()) * mean + 0.5)
end
function done(summary, latency, requests)
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("P%g %d\\n", p, latency:percentile(p)))
  end
end
"""


@dataclass
class FixedRateResult:
    requests: int
    seconds: float
    rps: float
    quantiles_ms: dict[float, float]  # 50, 90, 99, 99.9
    non_2xx: int
    socket_errors: int
    command: str

    def quantile(self, q: float) -> float:
        return self.quantiles_ms[q * 100]


def fixed_rate(
    url: str,
    rate: int,
    seconds: float,
    connections: int = 100,
    threads: int = 1,
    headers: Sequence[str] = (),
) -> FixedRateResult:
    """Load at about `rate` requests/s, spread in time (not in bursts): wrk with a Lua script
    that makes each of `connections` connections wait an exponential time after each response
    (mean: connections/rate less the response time seen in a 2 s pilot run). Latency is timed
    by wrk from writing the request to the end of the response. The rate achieved is
    reported; it falls short when responses get slower than in the pilot."""
    with tempfile.NamedTemporaryFile("w", prefix="poisson-", suffix=".lua") as script:
        script.write(POISSON_LUA)
        script.flush()

        def run(seconds: float, mean_ms: float) -> tuple[str, list[str]]:
            argv = wrk_command(url, seconds, connections, threads, headers)
            argv[-1:-1] = ["-s", script.name]
            argv += ["--", f"{mean_ms:.2f}"]
            return subprocess.run(argv, capture_output=True, text=True, check=True).stdout, argv

        # A short pilot tells how long a connection's cycle (wait + response) really is; the
        # waits are then shortened by the response time so that the rate comes out as asked.
        mean_ms = connections * 1000 / rate
        pilot = parse_wrk(run(2, mean_ms)[0], [])
        response_ms = max(0.0, connections * 1000 / max(pilot.rps, 1.0) - mean_ms)
        out, argv = run(seconds, max(0.0, mean_ms - response_ms))
    quantiles = {float(p): int(v) / 1000 for p, v in re.findall(r"^P([\d.]+) (\d+)$", out, re.M)}
    parsed = parse_wrk(out, argv)
    return FixedRateResult(
        requests=parsed.requests,
        seconds=parsed.seconds,
        rps=parsed.rps,
        quantiles_ms=quantiles,
        non_2xx=parsed.non_2xx,
        socket_errors=parsed.socket_errors,
        command=parsed.command.replace(script.name, "poisson.lua"),
    )


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def mixer_arguments(description: str, block: str, workers_help: str) -> argparse.ArgumentParser:
    """The options of the mixer benchmarks (authz, als): their block, the mixer worker counts
    to try (--workers 1,2 -> [1, 2]), the runs, whether to keep the logs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ip-block", default=block, help="first three octets (127.X.Y)")
    parser.add_argument(
        "--workers",
        default="1,2",
        type=lambda text: [int(n) for n in text.split(",")],
        help=workers_help,
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-logs", action="store_true")
    return parser


@contextlib.contextmanager
def world(block: str, keep_logs: bool = False, secure: bool = False) -> Iterator[World]:
    """A fresh temporary directory and a World on `block`; everything stops on exit."""
    signal.signal(signal.SIGTERM, raise_exit)
    tmp = Path(tempfile.mkdtemp(prefix="meshpilot-bench-"))
    procs = Processes(tmp / "logs")
    try:
        yield World(block, procs, tmp, secure)
    except BaseException:
        print(procs.tails(), file=sys.stderr)
        keep_logs = True
        raise
    finally:
        procs.stop_all()
        if keep_logs:
            print(f"logs kept in {tmp / 'logs'}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def machine() -> str:
    load = os.getloadavg()[0]
    return f"{os.cpu_count()} cores, load average {load:.2f} at start, {date.today().isoformat()}"


# --- the data-plane benchmark -----------------------------------------------------------------

HOOK = "def check(request):\n    return True\n"


def mesh_text(mixer: str, policies: str) -> str:
    head = f"""
        mesh: bench-dataplane
        mixer: {{address: {mixer}, failure_mode: closed}}
        services:
          api:
            port: 8080
        policies:"""
    return textwrap.dedent(head).lstrip() + (policies or " []") + "\n"


STATIC = """
  - name: no-admin
    service: api
    action: deny
    to: {paths: [/admin/*]}
  - name: reads
    service: api
    action: allow
    to: {methods: [GET, HEAD]}"""

CUSTOM = """
  - name: hook
    service: api
    action: custom
    hook: hook.py:check"""

CONFIGS = {"none": "", "static": STATIC, "custom": CUSTOM}


def run(args: argparse.Namespace, w: World) -> None:
    (w.tmp / "hook.py").write_text(HOOK)
    w.write_mesh(mesh_text(w.mixer_grpc, ""))
    w.start_control_plane()
    w.start_mixer(args.workers)
    api = w.start_instance("api", "v1", 10)
    meter = CpuMeter(
        {
            "envoy": lambda: group_members(api.sidecar.pid),
            "app": lambda: [api.app.pid] if api.app else [],
            "mixer": lambda: group_members(w.mixer.pid) if w.mixer else [],
        }
    )
    print(f"machine: {machine()}")
    wrk(api.inbound_url, 2, args.connections)  # warm-up
    results: dict[str, list[WrkResult]] = {name: [] for name in CONFIGS}
    cpu: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for round_ in range(1, args.runs + 1):
        for name, policies in CONFIGS.items():
            w.apply(mesh_text(w.mixer_grpc, policies))
            wrk(api.inbound_url, 1, args.connections)  # warm the new listener's connections

            def measure() -> tuple[WrkResult, dict[str, float]]:
                meter.start()
                result = wrk(api.inbound_url, args.seconds, args.connections)
                return result, meter.stop()

            result, cores = undisturbed(measure)
            cpu[name].append(cores)
            results[name].append(result)
            if result.non_2xx or result.socket_errors:
                print(f"  !! {name}: {result.non_2xx} non-2xx, {result.socket_errors} errors")
            print(
                f"round {round_} {name:6}: {result.rps:8.0f} req/s  p50 {result.p50_ms:.2f} ms"
                f"  p99 {result.p99_ms:.2f} ms  cpu: {format_cpu(cpu[name][-1])}",
                flush=True,
            )
    print()
    print(f"command per run: {results['none'][0].command}")
    base = median([r.rps for r in results["none"]])
    for name in CONFIGS:
        rps = median([r.rps for r in results[name]])
        p99 = median([r.p99_ms for r in results[name]])
        cores = {k: median([c[k] for c in cpu[name]]) for k in cpu[name][0]}
        envoy_us = median(
            [c["envoy"] / r.rps * 1e6 for c, r in zip(cpu[name], results[name], strict=True)]
        )
        print(
            f"{name:6}: median {rps:8.0f} req/s over {args.runs} runs "
            f"(min {min(r.rps for r in results[name]):.0f}, "
            f"max {max(r.rps for r in results[name]):.0f}), "
            f"{rps / base:.3f} x none ({(1 - rps / base) * 100:+.1f}% slower), "
            f"p99 {p99:.2f} ms; Envoy CPU per request {envoy_us:.0f} us; "
            f"cpu cores: {format_cpu(cores)}"
        )


def main() -> None:
    if sys.argv[1:2] == ["app"]:
        serve_app(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ip-block", default="127.0.92", help="first three octets (127.X.Y)")
    parser.add_argument("--runs", type=int, default=5, help="rounds (each runs every config)")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--workers", type=int, default=2, help="mixer worker processes")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    require_tool("wrk", "wrk")
    with world(args.ip_block, args.keep_logs) as w:
        run(args, w)


if __name__ == "__main__":
    main()
