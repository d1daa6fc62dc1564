"""`meshpilot serve`: the mesh file, the snapshot cache, the ADS server and the admin API, wired.

This is the one place where the long-running components are created, started and stopped.

With a state directory, the mesh identity (CA and join tokens, `identity/authority.py`) is opened
at start from the mesh file as it is then (a change of its `security:` section needs a restart),
and the certificate service (`identity/service.py`) is served on the xDS port; with `tls` that
port (ADS included) speaks TLS with a certificate from the mesh CA.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path

from meshpilot.admin.api import MeshStatus, admin_routes
from meshpilot.admin.http import HttpServer
from meshpilot.background import background
from meshpilot.errors import MeshpilotError
from meshpilot.identity.authority import MeshIdentity, open_mesh_identity
from meshpilot.identity.service import CertificateService, IdentityMetrics
from meshpilot.identity.tls import server_credentials
from meshpilot.mesh.diagnostics import Diagnostic, MeshInvalid
from meshpilot.mesh.load import load_mesh, parse_mesh
from meshpilot.mesh.watch import MeshWatcher
from meshpilot.model.ir import MeshIR
from meshpilot.translator.build import build_ir
from meshpilot.xds.cache import SnapshotCache
from meshpilot.xds.metrics import XdsMetrics, track_convergence
from meshpilot.xds.server import AdsServer

log = logging.getLogger(__name__)

# Sidecars reconnect within about 0.5 s (their bootstrap's backoff); give them all time to be back.
RECONNECT_GRACE_S = 2.0


class ControlPlane:
    def __init__(
        self,
        mesh_path: Path,
        xds: str,
        admin: str,
        mixer: str | None = None,
        state_dir: Path | None = None,
        tls: bool = False,
    ) -> None:
        if tls and state_dir is None:
            raise MeshpilotError("TLS on the xDS port needs the mesh CA: give a state directory")
        self.mesh_path = mesh_path
        self.mixer_address = mixer
        self.state_dir = state_dir
        self.tls = tls
        self.identity: MeshIdentity | None = None
        self.metrics = XdsMetrics(lambda: len(self.cache.watches))
        self.identity_metrics = IdentityMetrics(self.metrics.registry)
        self.cache = SnapshotCache(self.metrics)
        self.status = MeshStatus()
        self.ads = AdsServer(self.cache, self.metrics, xds)
        self.admin = HttpServer(admin, admin_routes(self))
        self.watcher = MeshWatcher(mesh_path, self.apply_file)
        self._convergence: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.apply_file()
        self.cache.hold_reconnects(RECONNECT_GRACE_S)
        if self.state_dir is None:
            await self.ads.start()
        else:
            self.identity = open_mesh_identity(
                load_mesh(self.mesh_path), self.mesh_path.parent, self.state_dir
            )
            certificates = CertificateService(self.identity, self.identity_metrics)
            credentials = (
                server_credentials(self.identity.ca, self.ads.address) if self.tls else None
            )
            await self.ads.start([certificates.handler()], credentials)
        await self.admin.start()
        await self.watcher.start()
        self._convergence = background(
            track_convergence(self.metrics, self.cache.all_synced), "convergence"
        )

    async def stop(self) -> None:
        if self._convergence is not None:
            self._convergence.cancel()
        await self.watcher.stop()
        await self.admin.stop()
        await self.ads.stop(grace=1.0)

    def apply_file(self) -> None:
        """Load, validate and apply the mesh file; a bad file changes nothing that is serving."""
        try:
            data = self.mesh_path.read_bytes()
            changed_at = self.mesh_path.stat().st_mtime
        except OSError as err:
            self._reject([Diagnostic(str(self.mesh_path), 1, 1, "<root>", f"cannot read: {err}")])
            return
        version = hashlib.blake2b(data, digest_size=8).hexdigest()
        if version == self.status.version:
            self.status.problems = []
            self.metrics.reloaded("unchanged")
            return
        try:
            started = time.perf_counter()
            mesh = build_ir(
                parse_mesh(data.decode("utf-8", "replace"), str(self.mesh_path)),
                self.mesh_path.parent,
            )
            self.cache.set_mesh(self._with_mixer_address(mesh))
            self.metrics.translation.observe(time.perf_counter() - started)
        except MeshInvalid as invalid:
            self._reject(invalid.problems)
            return
        except MeshpilotError as err:
            self._reject([Diagnostic(str(self.mesh_path), 1, 1, "<root>", str(err))])
            return
        self.metrics.change_started(changed_at)
        self.metrics.reloaded("applied")
        self.status = MeshStatus(version, time.time(), [])
        log.info("applied %s version %s", self.mesh_path, version)

    def _with_mixer_address(self, mesh: MeshIR) -> MeshIR:
        """`serve --mixer` wins over the file: `up` runs the mixer where it has room."""
        if self.mixer_address is None or mesh.mixer is None:
            return mesh
        return replace(mesh, mixer=replace(mesh.mixer, address=self.mixer_address))

    def _reject(self, problems: list[Diagnostic]) -> None:
        self.metrics.reloaded("rejected")
        self.status.problems = [p.format() for p in sorted(problems)]
        for line in self.status.problems:
            log.error("%s", line)
        log.error("%s not applied; the last good configuration keeps serving", self.mesh_path)


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


def run_control_plane(
    mesh_path: Path,
    xds: str,
    admin: str,
    mixer: str | None = None,
    state_dir: Path | None = None,
    tls: bool = False,
) -> None:
    configure_logging()
    plane = ControlPlane(mesh_path, xds, admin, mixer, state_dir, tls)
    asyncio.run(_serve_until_signalled(plane))
