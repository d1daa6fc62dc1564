"""`meshpilot serve`: the mesh file, the snapshot cache, the ADS server and the admin API, wired.

This is the one place where the long-running components are created, started and stopped.

With a state directory, the mesh identity (CA and join tokens, `identity/authority.py`; shared
by the replicas on a shared store, `identity/shared.py`) is opened from each applied mesh file
whose name or `security:` section changed, and the certificate
service (`identity/service.py`) is served on the xDS port (UNAVAILABLE until a mesh file was
applied); with `tls` that port (ADS included) speaks TLS with a certificate from the mesh CA,
made at start (so TLS needs a usable mesh file at start), and admits only ADS streams with a
join token for the node they describe (`identity/admission.py`).

The registry of instances is the store's (`store/`): this process's memory by default; on etcd
(`serve --store`), replicas register the instances of the sidecars streaming to them and serve
those of every other replica too.

On a shared store the mesh served is the mesh history's current version (`store/base.py`
History): each replica follows it, and one given a mesh file as well publishes each valid save
of it as a new version (GitOps); a stored version a replica cannot translate is rejected like
a bad save, and the last good one keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from meshpilot.admin.api import MeshStatus, admin_routes
from meshpilot.admin.client import MIXER_HTTP
from meshpilot.admin.console import CONSOLE_PATHS
from meshpilot.admin.http import HttpServer
from meshpilot.background import background
from meshpilot.errors import MeshpilotError
from meshpilot.identity.admission import JoinLimits, Metadata, admit_stream
from meshpilot.identity.authority import MeshIdentity, open_mesh_identity
from meshpilot.identity.errors import IdentityError
from meshpilot.identity.service import CertificateService, IdentityMetrics
from meshpilot.identity.shared import follow_revocations, open_shared_identity
from meshpilot.identity.tls import ServerCertificate
from meshpilot.mesh.diagnostics import Diagnostic, MeshInvalid
from meshpilot.mesh.incremental import MeshReader
from meshpilot.mesh.load import read_mesh_file
from meshpilot.mesh.schema import MeshSpec
from meshpilot.mesh.schema.security import SecuritySpec
from meshpilot.mesh.watch import MeshWatcher
from meshpilot.model.ir import MeshIR
from meshpilot.model.proxies import Proxy
from meshpilot.store import MemoryStore, MeshVersion, Store, StoreUnavailable, who
from meshpilot.translator.build import IrBuilder
from meshpilot.wording import serving
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.metrics import XdsMetrics, track_convergence
from meshpilot.xds.peers import PeerLimits
from meshpilot.xds.server import AdsServer

log = logging.getLogger(__name__)

SAVE_NOTE = "save seen by serve"  # the history's note on a version a replica published
# Sidecars reconnect within about 0.5 s (their bootstrap's backoff); give them all time to be back.
RECONNECT_GRACE_S = 2.0


@dataclass(frozen=True)
class _Loaded:
    """A mesh file as read: its version, and the spec and IR if it changed and is valid, or
    the problems that keep it from being applied."""

    version: str
    data: bytes = b""
    source: Path = Path()  # the file it was read from: problems name it, paths resolve from it
    stored: int | None = None  # its number in the mesh history
    spec: MeshSpec | None = None
    mesh: MeshIR | None = None
    seconds: float = 0.0  # reading and validating it
    problems: list[Diagnostic] = field(default_factory=list)


class ControlPlane:
    def __init__(
        self,
        mesh_path: Path | None,
        xds: str,
        admin: str,
        mixer: str | None = None,
        state_dir: Path | None = None,
        tls: bool = False,
        admin_token: str | None = None,
        join_limits: JoinLimits | None = None,
        peer_limits: PeerLimits | None = None,
        mixer_metrics: str = MIXER_HTTP.default,
        store: Store | None = None,
    ) -> None:
        if tls and state_dir is None:
            raise MeshpilotError("TLS on the xDS port needs the mesh CA: give a state directory")
        if mesh_path is None and not (store is not None and store.shared):
            raise MeshpilotError("give a mesh file, or a store (--store) whose history to serve")
        self.mesh_path = mesh_path
        self.mixer_address = mixer
        self.mixer_metrics = mixer_metrics
        self.state_dir = state_dir
        self.tls = tls
        self.join_limits = join_limits or JoinLimits()
        self.identity: MeshIdentity | None = None
        self.server_certificate: ServerCertificate | None = None  # with TLS, once started
        self._identity_source: tuple[str, SecuritySpec] | None = None
        self.metrics = XdsMetrics(lambda: len(self.cache.watches))
        self.certificates = CertificateService(None, IdentityMetrics(self.metrics.registry))
        self.store = store if store is not None else MemoryStore()
        self.replica = replica_name()
        self.registry = self.store.registry(self.replica)
        self.cache = SnapshotCache(self.metrics, members=self.registry)
        self.metrics.store_up(lambda: self.store.health.connected)
        self.status = MeshStatus()
        # A save is read and built again only where its text changed (one save at a time).
        self._reader, self._ir = MeshReader(), IrBuilder()
        self.ads = AdsServer(
            self.cache, self.metrics, xds, self._admit if tls else None, peer_limits
        )
        self.admin = HttpServer(admin, admin_routes(self), admin_token, CONSOLE_PATHS)
        self._files_read: tuple[Path, ...] = ()  # by the applied mesh: JWKS files
        self.from_history = self.store.shared
        on_save = self.publish if self.from_history else self.reload
        self.watcher = (
            MeshWatcher(mesh_path, on_save, also=lambda: self._files_read)
            if mesh_path is not None
            else None
        )
        self._convergence: asyncio.Task[None] | None = None
        self._others: asyncio.Task[None] | None = None
        self._history: asyncio.Task[None] | None = None
        self._revocations: asyncio.Task[None] | None = None
        self._shared_revocations: frozenset[str] = frozenset()  # through the store
        # A save being published and a stored version being applied are read one at a time.
        self._translating = asyncio.Lock()

    async def start(self) -> None:
        if self.from_history:
            await self._start_from_history()
        else:
            await self._reload(seen_at=None)
        self.cache.hold_reconnects(RECONNECT_GRACE_S)
        if self.state_dir is None:
            await self.ads.start()
        else:
            credentials = None
            if self.tls:
                if self.identity is None:
                    raise MeshpilotError(
                        f"TLS on the xDS port needs the mesh CA, which {self._mesh_source()} "
                        "did not give (see the errors above)"
                    )
                self.server_certificate = ServerCertificate(self.identity.ca, self.ads.address)
                credentials = self.server_certificate.credentials()
            await self.ads.start([self.certificates.handler()], credentials)
        await self.admin.start()
        if self.watcher is not None:
            await self.watcher.start()
        if self.from_history:
            self._history = background(self._follow_history(), "the mesh history")
        if self.store.shared and self.state_dir is not None:
            self._revocations = background(self._follow_revocations(), "token revocations")
        self._others = background(self._follow_other_replicas(), "other replicas' instances")
        self._convergence = background(
            track_convergence(self.metrics, self.cache.all_synced), "convergence"
        )

    async def stop(self) -> None:
        for task in (self._convergence, self._others, self._history, self._revocations):
            if task is not None:
                task.cancel()
        if self.watcher is not None:
            await self.watcher.stop()
        await self.admin.stop()
        # Before the streams end: their instances stay (till the lease expires) while their
        # sidecars move to another replica.
        await self.registry.leave()
        await self.ads.stop(grace=1.0)
        await self.store.close()

    async def _follow_revocations(self) -> None:
        async for revoked in follow_revocations(self.store.keys):
            self._shared_revocations = revoked
            if self.identity is not None:
                self.identity.tokens.shared_revocations = revoked

    async def _follow_other_replicas(self) -> None:
        async for others in self.registry.others():
            self.cache.set_others(others)

    def _mesh_source(self) -> str:
        if self.mesh_path is not None:
            return str(self.mesh_path)
        return f"the mesh history in {self.store.url} (empty? `meshpilot apply` a mesh first)"

    async def _start_from_history(self) -> None:
        """Publish the mesh file (if any), then serve the history's current version (if any;
        an etcd that does not answer yet is followed in the background)."""
        if self.mesh_path is not None:
            await self.publish()
        try:
            current = await self.store.history.latest()
        except StoreUnavailable as err:
            log.error("%s; serving nothing until it answers", err)
            return
        if current is not None:
            await self._apply_stored(current, seen_at=None)

    async def _follow_history(self) -> None:
        async for version in self.store.history.current():
            await self._apply_stored(version, seen_at=time.monotonic())

    async def _apply_stored(self, version: MeshVersion, seen_at: float | None) -> None:
        """Serve a stored version; one this replica cannot translate changes nothing."""
        async with self._translating:
            loaded = await asyncio.to_thread(
                self._translate, version.content, Path(version.source), version.number
            )
            await self._apply(loaded, seen_at)

    async def publish(self) -> None:
        """GitOps: a valid save of the mesh file is stored as the history's next version (which
        every replica then serves, this one included); a bad one is rejected as without a
        store, and nothing is stored."""
        assert self.mesh_path is not None
        async with self._translating:
            loaded = await asyncio.to_thread(self._load)
            if loaded.problems:
                self._reject(loaded.problems, str(self.mesh_path))
                return
            try:
                stored, new = await self.store.history.append(
                    loaded.data, str(self.mesh_path.resolve()), who(), SAVE_NOTE
                )
            except StoreUnavailable as err:
                log.error("%s not published: %s", self.mesh_path, err)
                return
            self.status.problems = []
            said = "published as" if new else "unchanged from stored"
            log.info("%s %s version %d (%s)", self.mesh_path, said, stored.number, stored.digest)
            if not new and loaded.mesh is not None:  # the same text, but a file it reads changed
                await self._apply(replace(loaded, stored=stored.number), time.monotonic())

    async def reload(self) -> None:
        """Load, validate and apply the mesh file; a bad file changes nothing that is serving.
        Reading, validating and translating it (seconds for a big one) happen off the event
        loop, so ADS and the admin API keep answering meanwhile."""
        await self._reload(seen_at=time.monotonic())

    async def _reload(self, seen_at: float | None) -> None:
        """`seen_at`: when this control plane saw the save (monotonic), which convergence is
        measured from (not the file's mtime, which any copy or clock can set); None for the
        load at start, which is no change to converge on."""
        await self._apply(await asyncio.to_thread(self._load), seen_at)

    def _load(self) -> _Loaded:
        """The file read and validated (no state of the control plane is changed here)."""
        assert self.mesh_path is not None
        try:
            data = read_mesh_file(self.mesh_path)
        except (MeshInvalid, OSError) as err:
            problems = err.problems if isinstance(err, MeshInvalid) else [self._problem(err)]
            return _Loaded("", problems=problems)
        return self._translate(data, self.mesh_path)

    def _translate(self, data: bytes, source: Path, stored: int | None = None) -> _Loaded:
        """A mesh file's content validated and built (unless it is what serves already)."""
        started = time.perf_counter()
        loaded = _Loaded(mesh_version(data, self._files_read), data, source, stored)
        if loaded.version == self.status.version:
            return loaded
        try:
            spec = self._reader.parse(data.decode("utf-8", "replace"), str(source))
            mesh = self._ir.build(spec, source.parent, secure=self.tls)
        except MeshInvalid as invalid:
            return replace(loaded, problems=invalid.problems)
        except MeshpilotError as err:
            return replace(loaded, problems=[self._problem(err, source)])
        version = mesh_version(data, map(Path, mesh.files_read))
        seconds = time.perf_counter() - started
        return replace(loaded, version=version, spec=spec, mesh=mesh, seconds=seconds)

    async def _apply(self, loaded: _Loaded, seen_at: float | None) -> None:
        if loaded.problems:
            self._reject(loaded.problems, _described(loaded))
            return
        if loaded.spec is None or loaded.mesh is None:  # unchanged
            self.status.problems = []
            self.status.stored_version = loaded.stored or self.status.stored_version
            self.metrics.reloaded("unchanged")
            return
        started = time.perf_counter()
        try:
            await self.cache.apply_mesh(self._with_mixer_address(loaded.mesh))
        except MeshpilotError as err:
            self._reject([self._problem(err, loaded.source)], _described(loaded))
            return
        self.metrics.translation.observe(loaded.seconds + time.perf_counter() - started)
        self._files_read = tuple(map(Path, loaded.mesh.files_read))
        await self._open_identity(loaded.spec, loaded.source.parent)
        if seen_at is not None:
            self.metrics.change_started(seen_at)
        self.metrics.reloaded("applied")
        self.status = MeshStatus(loaded.version, time.time(), [], loaded.stored)
        log.info("applied %s version %s", _described(loaded), loaded.version)

    def _problem(self, err: Exception, source: Path | None = None) -> Diagnostic:
        return Diagnostic(str(source or self.mesh_path), 1, 1, "<root>", str(err))

    async def _open_identity(self, spec: MeshSpec, base_dir: Path) -> None:
        """(Re)open the mesh identity when the mesh's name or `security:` section changed; on
        failure the previous one, if any, keeps signing. The xDS port's TLS certificate is made
        at start: a new CA takes a restart to reach it. Replicas on a shared store share one
        CA and token key through it."""
        source = (spec.mesh, spec.security)
        if self.state_dir is None or source == self._identity_source:
            return
        try:
            if self.store.shared:
                identity = await open_shared_identity(
                    spec, base_dir, self.state_dir, self.store.keys
                )
            else:
                identity = open_mesh_identity(spec, base_dir, self.state_dir)
        except (IdentityError, StoreUnavailable) as err:
            kept = "the previous CA keeps signing" if self.identity else "no certificates signed"
            log.error("mesh identity not opened (%s): %s", kept, err)
            return
        identity.tokens.shared_revocations = self._shared_revocations
        self.identity = self.certificates.identity = identity
        self._identity_source = source
        log.info(
            "mesh identity: CA %s, certificates for %s",
            identity.ca.fingerprint,
            identity.certificate_ttl,
        )

    def _admit(self, proxy: Proxy, metadata: Metadata, peer: str) -> Callable[[], None]:
        """A secure control plane serves only sidecars with a join token for what they claim,
        and only so many at once per token and per service."""
        return self.join_limits.join(admit_stream(self.identity, proxy, metadata, peer))

    def _with_mixer_address(self, mesh: MeshIR) -> MeshIR:
        """`serve --mixer` wins over the file: `up` runs the mixer where it has room."""
        if self.mixer_address is None or mesh.mixer is None:
            return mesh
        return replace(mesh, mixer=replace(mesh.mixer, address=self.mixer_address))

    def _reject(self, problems: list[Diagnostic], what: str) -> None:
        self.metrics.reloaded("rejected")
        self.status.problems = [p.format() for p in sorted(problems)]
        for line in self.status.problems:
            log.error("%s", line)
        log.error("%s not applied; %s", what, serving(self.status.version))


def _described(loaded: _Loaded) -> str:
    """The file, or the stored version and the file it was applied from, for the logs."""
    if loaded.stored is None:
        return str(loaded.source)
    return f"stored version {loaded.stored} (of {loaded.source})"


def mesh_version(data: bytes, files_read: Iterable[Path]) -> str:
    """A hash of the mesh file's bytes and of the files it reads (none: of its bytes alone)."""
    digest = hashlib.blake2b(data, digest_size=8)
    for path in files_read:
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0missing")
    return digest.hexdigest()


def replica_name() -> str:
    """Unique to this process: the store's key of what it holds (never part of a resource)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


async def _serve_until_signalled(plane: ControlPlane) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await plane.start()
    log.info("control plane ready: xds %s, admin %s", plane.ads.address, plane.admin.address)
    await stop.wait()
    log.info("shutting down")
    await plane.stop()


def run_control_plane(plane: ControlPlane) -> None:
    """Serve with `plane` until SIGTERM or SIGINT."""
    configure_logging()
    asyncio.run(_serve_until_signalled(plane))
