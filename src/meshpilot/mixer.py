"""`meshpilot mixer`: the policy & telemetry service, a separate process from the control plane.

Worker processes share one gRPC port (SO_REUSEPORT) and serve ext_authz checks and access-log
streams: one Python event loop answers about 4-5k checks/s, so checks scale with workers. Access
log entries go from the workers to this parent process over a queue; the parent keeps the
metrics and the log store, so they count every request exactly once whichever worker got it, and
serves them over HTTP. A worker that dies is restarted.

The mixer is a workload of the mesh: with a join token (for MIXER_SERVICE) each worker gets a
certificate of its own from the control plane and serves mTLS that only mesh certificates pass,
renewing it as a sidecar's agent does; with `--insecure`, plaintext and no caller identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.process
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from meshpilot.admin.http import Handler, HttpServer, Reply
from meshpilot.background import background
from meshpilot.errors import MeshpilotError
from meshpilot.identity.client import CertificateClient, IdentityAgent
from meshpilot.identity.workload_tls import WorkloadServerCredentials
from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.watch import MeshWatcher
from meshpilot.model.ir import MeshIR
from meshpilot.policy.authz import AuthorizationService
from meshpilot.policy.engine import CustomPolicies
from meshpilot.policy.ratelimit import Decision, GlobalLimits, RateLimitService
from meshpilot.runner.envoy import parent_death_signal
from meshpilot.telemetry.als import AccessLogService
from meshpilot.telemetry.entries import LogEntry
from meshpilot.telemetry.metrics import KnownNames, MeshMetrics
from meshpilot.telemetry.store import LogStore
from meshpilot.translator.build import load_ir
from meshpilot.wording import counted

log = logging.getLogger(__name__)

QUEUE_BATCHES = 10_000  # batches of entries waiting for the parent; past this, entries drop
RESTART_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)
START_TOGETHER_TIMEOUT_S = 10.0

# entries, a count of entries a worker had to drop, or a global rate limit's decision
Batch = list[LogEntry] | int | Decision


@dataclass(frozen=True)
class MixerIdentity:
    """The mixer's join token and the control plane that signs its certificates."""

    token: str
    xds: str


# --- worker process ---------------------------------------------------------------------------


class MixerWorker:
    """One worker: the gRPC services on the shared port, and the mesh file's custom policies
    and global rate limits."""

    def __init__(
        self,
        mesh_path: Path,
        listen: str,
        batches: Queue[Batch],
        start_together: Barrier | None,
        identity: MixerIdentity | None = None,
    ) -> None:
        self.mesh_path = mesh_path
        self.identity = identity
        self.start_together = start_together
        self.listen = listen
        self.batches = batches
        self.policies = CustomPolicies()
        self.limits = GlobalLimits()
        self.watcher = MeshWatcher(mesh_path, self.reload_off_loop)
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        self._dropped = 0

    async def reload_off_loop(self) -> None:
        """Apply the mesh file's policies and limits; a bad file keeps the last good ones.
        Validating a big file takes seconds, during which checks must keep being answered."""
        mesh = await asyncio.to_thread(self._load)
        if mesh is not None:
            self.policies.update(mesh)
            await self.limits.update(mesh)

    def _load(self) -> MeshIR | None:
        try:
            return load_ir(self.mesh_path, secure=self.identity is not None)
        except MeshInvalid as invalid:
            for problem in invalid.problems:
                log.error("%s", problem.format())
            log.error("%s not applied; the last good policies stay in force", self.mesh_path)
            return None

    def _wait_for_the_others(self) -> None:
        """The first workers start together: SO_REUSEPORT spreads connections over the sockets
        listening when each arrives, so a worker listening early would get every sidecar that
        was waiting for the mixer."""
        if self.start_together is None:
            return
        try:
            self.start_together.wait(timeout=START_TOGETHER_TIMEOUT_S)
        except threading.BrokenBarrierError:
            log.warning("not every mixer worker started in time; listening anyway")

    def sink(self, entries: list[LogEntry]) -> None:
        try:
            if self._dropped:
                self.batches.put_nowait(self._dropped)
                self._dropped = 0
            self.batches.put_nowait(entries)
        except queue.Full:
            self._dropped += len(entries)

    def record(self, decision: Decision) -> None:
        """A global rate limit's decision, for the parent's metrics (dropped when it lags)."""
        with contextlib.suppress(queue.Full):
            self.batches.put_nowait(decision)

    async def run(self, stop: asyncio.Event) -> None:
        await self.reload_off_loop()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationService(self.policies), self.server
        )
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(
            AccessLogService(self.sink, mtls=self.identity is not None), self.server
        )
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(
            RateLimitService(self.limits, self.record, mtls=self.identity is not None), self.server
        )
        await self.policies.pool.start()
        agent = await self._agent()
        renewing = background(agent.run(), "certificate renewal") if agent else None
        await asyncio.to_thread(self._wait_for_the_others)
        if agent is None or agent.credentials is None:
            port = self.server.add_insecure_port(self.listen)
        else:
            tls = WorkloadServerCredentials(agent.credentials)
            agent.observers.append(tls.renewed)
            port = self.server.add_secure_port(self.listen, tls.credentials())
        if port == 0:
            raise MeshpilotError(f"cannot listen on {self.listen}")
        await self.server.start()
        await self.watcher.start()
        await stop.wait()
        await self.watcher.stop()
        await self.server.stop(grace=1.0)
        await self.policies.pool.close()
        await self.limits.close()
        if renewing is not None:
            renewing.cancel()

    async def _agent(self) -> IdentityAgent | None:
        """With a token: an agent holding this worker's first certificate."""
        if self.identity is None:
            return None
        agent = IdentityAgent(CertificateClient(self.identity.xds, self.identity.token))
        await agent.first_credentials()
        return agent


def _worker_main(
    mesh_path: Path,
    listen: str,
    batches: Queue[Batch],
    start_together: Barrier | None,
    index: int,
    identity: MixerIdentity | None,
    parent: int,
) -> None:
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s mixer[{index}] %(name)s: %(message)s"
    )
    # A worker outliving its parent (kill -9) would keep a share of the port (SO_REUSEPORT) and
    # take a restarted mixer's connections, its entries counted by no one.
    die_with_parent = parent_death_signal()
    if die_with_parent is not None:
        die_with_parent()
    if os.getppid() != parent:
        return  # the parent died before the signal was armed

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await MixerWorker(mesh_path, listen, batches, start_together, identity).run(stop)

    asyncio.run(main())


# --- parent process ---------------------------------------------------------------------------


class Mixer:
    """The parent: starts and supervises the workers, aggregates telemetry, serves HTTP."""

    def __init__(
        self,
        mesh_path: Path,
        listen: str,
        metrics: str,
        workers: int,
        identity: MixerIdentity | None = None,
    ) -> None:
        self.mesh_path = mesh_path
        self.identity = identity
        self.listen = listen
        self.workers = max(1, workers)
        self.metrics = MeshMetrics()
        self.store = LogStore()
        self.http = HttpServer(metrics, self._routes())
        self.watcher = MeshWatcher(mesh_path, self._learn_names_off_loop)
        self._context = multiprocessing.get_context("spawn")
        self._batches: Queue[Batch] = self._context.Queue(QUEUE_BATCHES)
        self._processes: list[multiprocessing.process.BaseProcess | None] = [None] * self.workers
        self._restarts = [0] * self.workers
        self._stopping = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="telemetry", daemon=True)

    def _routes(self) -> dict[str, Handler]:
        def logs(query: dict[str, str]) -> Reply:
            status = _number(query, "status")
            limit = _number(query, "limit")
            return Reply.json(
                self.store.query(
                    query.get("service"),
                    status,
                    query.get("path"),
                    100 if limit is None else limit,
                    _number(query, "after"),
                )
            )

        def top(query: dict[str, str]) -> Reply:
            window = float(query.get("window") or 60)
            return Reply.json(self.store.top(window, by_version=query.get("by") == "version"))

        return {
            "/healthz": lambda _: Reply(200, b"ok\n"),
            "/metrics": lambda _: Reply(
                200, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST
            ),
            "/logs": logs,
            "/top": top,
        }

    def _drain(self) -> None:
        """Move entries from the workers into metrics and the store (a thread of its own)."""
        while not self._stopping.is_set():
            try:
                batch = self._batches.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if isinstance(batch, int):
                    self.metrics.dropped(batch)
                elif isinstance(batch, Decision):
                    self.metrics.rate_limited(batch.service, batch.route, batch.decision)
                else:
                    self.metrics.record(batch)
                    self.store.add(batch)
            except Exception:
                log.exception("could not record access-log entries")

    def worker_pids(self) -> list[int | None]:
        """The pid of each worker slot's live process (None while it is being restarted)."""
        return [p.pid if p is not None and p.is_alive() else None for p in self._processes]

    def _start_worker(self, index: int, start_together: Barrier | None = None) -> None:
        process = self._context.Process(
            target=_worker_main,
            args=(
                self.mesh_path,
                self.listen,
                self._batches,
                start_together,
                index,
                self.identity,
                os.getpid(),
            ),
            name=f"mixer-worker-{index}",
            daemon=True,
        )
        process.start()
        self._processes[index] = process

    async def _supervise(self) -> None:
        """Restart a worker that died, with growing back-off; log it every time."""
        while True:
            await asyncio.sleep(0.25)
            for index, process in enumerate(self._processes):
                if process is None or process.is_alive():
                    continue
                delay = RESTART_BACKOFF_S[min(self._restarts[index], len(RESTART_BACKOFF_S) - 1)]
                log.error(
                    "mixer worker %d exited (%s); restarting in %.1f s",
                    index,
                    process.exitcode,
                    delay,
                )
                self._processes[index] = None
                self._restarts[index] += 1
                await asyncio.sleep(delay)
                self._start_worker(index)

    def _learn_names(self) -> None:
        """Metric labels take only the mesh file's names; a bad file keeps the last good ones."""
        try:
            self.metrics.known = KnownNames.of(load_mesh(self.mesh_path))
        except MeshInvalid:
            log.error("%s not applied to metric labels; the last good names stay", self.mesh_path)

    async def _learn_names_off_loop(self) -> None:
        await asyncio.to_thread(self._learn_names)

    async def run(self, stop: asyncio.Event) -> None:
        self._learn_names()
        await self.watcher.start()
        self._drainer.start()
        start_together = self._context.Barrier(self.workers)  # a restarted worker does not wait
        for index in range(self.workers):
            self._start_worker(index, start_together)
        await self.http.start()
        log.info(
            "mixer ready: grpc %s (%s), metrics http://%s",
            self.listen,
            counted(self.workers, "worker"),
            self.http.address,
        )
        supervisor = background(self._supervise(), "supervise mixer workers")
        await stop.wait()
        supervisor.cancel()
        await self.watcher.stop()
        await self.http.stop()
        self._stop_workers()
        self._stopping.set()

    def _stop_workers(self) -> None:
        running = [p for p in self._processes if p is not None]
        for process in running:
            if process.pid is not None and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for process in running:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()


def _number(query: dict[str, str], name: str) -> int | None:
    """A non-negative integer query parameter; anything else is as if it were not given."""
    value = query.get(name, "")
    return int(value) if value.isdigit() else None


def run_mixer(
    mesh_path: Path, listen: str, metrics: str, workers: int, identity: MixerIdentity | None
) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Mixer(mesh_path, listen, metrics, workers, identity).run(stop)

    asyncio.run(main())
