"""A test's own little world: loopback IPs, a control plane, app instances with real sidecars.

Secure by default, as `meshpilot serve` is: the control plane keeps its CA in the test's state
directory, and every sidecar (and the mixer) joins with a join token minted for it here. A test
of the attacks passes its own token, none, or starts the control plane `insecure=True`."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.client import MeshClient
from harness.envoy_admin import EnvoyAdmin
from harness.processes import Proc, Processes
from harness.wait import http_get, http_json, wait_envoy_live, wait_for, wait_http_ok
from meshpilot.identity.authority import open_token_authority
from meshpilot.identity.ca import ROOT_CERT
from meshpilot.identity.state import private_dir, write_file
from meshpilot.model.names import MIXER_SERVICE
from meshpilot.runner.addresses import LoopbackAllocator

MESHPILOT = str(Path(sys.executable).parent / "meshpilot")
APP = str(Path(__file__).resolve().parent.parent / "app.py")
XDS_PORT, ADMIN_PORT = 18000, 18001  # the contract's defaults, on the control plane's own IP
ENVOY_ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT = 15000, 15001, 15006
SIDECAR_PORTS = (ENVOY_ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT)  # on the instance's IP
START_TIMEOUT = 20.0
MINT = "mint"  # start_sidecar's default token: one minted for the instance's service and labels


@dataclass
class ControlPlane:
    """A running `meshpilot serve` and its admin API."""

    proc: Proc
    ip: str
    xds_port: int
    admin_port: int
    mesh_path: Path | None  # None: it serves its store's mesh history
    secure: bool = True

    @property
    def xds(self) -> str:
        return f"{self.ip}:{self.xds_port}"

    @property
    def admin(self) -> str:
        return f"{self.ip}:{self.admin_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def healthz(self) -> int:
        return http_get(f"{self.admin_url}/healthz").status

    def proxies(self) -> list[dict[str, Any]]:
        proxies: list[dict[str, Any]] = http_json(f"{self.admin_url}/proxies")
        return proxies

    def proxy(self, node_id: str) -> dict[str, Any] | None:
        return next((p for p in self.proxies() if p["node_id"] == node_id), None)

    def mesh(self) -> dict[str, Any]:
        mesh: dict[str, Any] = http_json(f"{self.admin_url}/mesh")
        return mesh

    def config_dump(self, node_id: str) -> Any:
        return http_json(f"{self.admin_url}/config_dump?node={node_id}")

    def metrics(self) -> str:
        return http_get(f"{self.admin_url}/metrics").text

    def wait_synced(self, node_ids: Iterable[str], timeout: float = 10.0) -> None:
        """Wait until each named proxy is connected and every type it was sent is SYNCED."""
        wanted = set(node_ids)

        def synced() -> bool:
            by_id = {p["node_id"]: p for p in self.proxies()}
            return all(
                node in by_id
                and by_id[node]["types"]
                and all(t["status"] == "SYNCED" for t in by_id[node]["types"].values())
                for node in wanted
            )

        wait_for(synced, timeout, message=f"{sorted(wanted)} SYNCED", ignore=(OSError,))


MIXER_GRPC_PORT = 18081
MIXER_HTTP_PORT = 18082


@dataclass
class Mixer:
    """A running `meshpilot mixer`: where sidecars reach it and where its metrics are."""

    ip: str
    proc: Proc | None = None

    @property
    def grpc(self) -> str:
        return f"{self.ip}:{MIXER_GRPC_PORT}"

    @property
    def http(self) -> str:
        return f"{self.ip}:{MIXER_HTTP_PORT}"

    def metrics(self) -> str:
        return http_get(f"http://{self.http}/metrics").text

    def logs(self, **query: str) -> Any:
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return http_json(f"http://{self.http}/logs?{params}")


@dataclass
class Instance:
    """One app process on its own IP plus its real Envoy sidecar."""

    service: str
    version: str | None
    ip: str
    app_port: int
    app: Proc
    sidecar: Proc

    @property
    def node_id(self) -> str:
        return f"{self.service}~{self.ip}"

    @property
    def admin(self) -> EnvoyAdmin:
        return EnvoyAdmin(f"http://{self.ip}:{ENVOY_ADMIN_PORT}")

    @property
    def app_url(self) -> str:
        return f"http://{self.ip}:{self.app_port}"

    @property
    def inbound(self) -> str:
        """`ip:15006`: how this instance appears as an endpoint of its service."""
        return f"{self.ip}:{INBOUND_PORT}"

    def client(self, timeout: float = 5.0) -> MeshClient:
        """A client of this instance's outbound listener: requests as if sent by its app."""
        return MeshClient(self.ip, OUTBOUND_PORT, timeout)


class MeshEnv:
    """Everything one e2e test starts; the `mesh_env` fixture stops it all afterwards."""

    def __init__(self, tmp: Path, ips: LoopbackAllocator, processes: Processes) -> None:
        self.tmp, self.ips, self.processes = tmp, ips, processes
        self.state_dir = tmp / "state"
        self.control_plane: ControlPlane | None = None
        self.replicas: list[ControlPlane] = []  # control planes sharing a store (`store=`)
        self.instances: list[Instance] = []

    def token(self, service: str, labels: dict[str, str] | None = None, **options: Any) -> str:
        """A join token of the running control plane's mesh (options: `ttl`, `any_address`)."""
        return open_token_authority(self.state_dir).issue(service, labels, **options)

    def trust_anchor(self) -> bytes:
        """The mesh CA's root (PEM), to verify the control plane as a sidecar does."""
        return (self.state_dir / ROOT_CERT).read_bytes()

    def token_file(self, token: str, name: str) -> Path:
        path = private_dir(self.tmp / "tokens") / name
        write_file(path, token.encode(), secret=True)
        return path

    def write_mesh(self, text: str, name: str = "mesh.yaml") -> Path:
        """Write a mesh file (dedented) into the test's directory; rewriting it is a live edit."""
        path = self.tmp / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def start_control_plane(
        self,
        mesh_path: Path | None,
        *,
        ip: str | None = None,
        xds_port: int = XDS_PORT,
        admin_port: int = ADMIN_PORT,
        wait: bool = True,
        mixer: str | None = None,
        mixer_metrics: str | None = None,
        insecure: bool = False,
        store: str | None = None,
        state_dir: Path | None = None,
    ) -> ControlPlane:
        """`meshpilot serve` on its own IP; waits for `/healthz` unless `wait=False`.
        Pass the old `ip` to restart a stopped control plane on the same addresses. With a
        `store` URL it is one more replica: sidecars started afterwards list every replica; with
        no `mesh_path` it serves the store's mesh history. `state_dir`: its own (default: the
        test's, shared by every control plane)."""
        ip = ip or self.ips.ip()
        argv = [MESHPILOT, "serve", *([str(mesh_path)] if mesh_path else [])]
        argv += ["--xds", f"{ip}:{xds_port}", "--admin", f"{ip}:{admin_port}"]
        argv += ["--mixer", mixer] if mixer else []
        argv += ["--mixer-metrics", mixer_metrics] if mixer_metrics else []
        argv += ["--insecure"] if insecure else ["--state-dir", str(state_dir or self.state_dir)]
        argv += ["--store", store] if store else []
        cwd = mesh_path.parent if mesh_path else self.tmp
        proc = self.processes.start("controlplane", argv, cwd=cwd)
        cp = ControlPlane(proc, ip, xds_port, admin_port, mesh_path, not insecure)
        if wait:
            wait_http_ok(f"{cp.admin_url}/healthz", START_TIMEOUT, procs=[proc])
        self.control_plane = cp
        if store:
            self.replicas.append(cp)
        return cp

    def start_with_mixer(self, mesh_path: Path, workers: int = 1) -> tuple[ControlPlane, Mixer]:
        """The control plane, told where the mixer is, then the mixer (it gets its certificate
        from the control plane)."""
        mixer_ip = self.ips.ip()
        mixer = Mixer(mixer_ip)
        control_plane = self.start_control_plane(
            mesh_path, mixer=mixer.grpc, mixer_metrics=mixer.http
        )
        return control_plane, self.start_mixer(mesh_path, mixer_ip, workers)

    def start_mixer(self, mesh_path: Path, ip: str | None = None, workers: int = 1) -> Mixer:
        """`meshpilot mixer` on its own IP (gRPC :18081, metrics :18082), with a token of the
        running control plane (else plaintext); waits for /healthz and the gRPC port.
        Pass the old `ip` to restart a stopped mixer on the same addresses."""
        ip = ip or self.ips.ip()
        mixer = Mixer(ip)
        argv = [MESHPILOT, "mixer", str(mesh_path), "--listen", mixer.grpc]
        argv += ["--metrics", mixer.http, "--workers", str(workers)]
        if self.control_plane is not None and self.control_plane.secure:
            token = self.token_file(self.token(MIXER_SERVICE), f"mixer-{ip}")
            argv += ["--token-file", str(token), "--xds", self.control_plane.xds]
        else:
            argv += ["--insecure"]
        mixer.proc = self.processes.start("mixer", argv, cwd=mesh_path.parent)
        wait_http_ok(f"http://{mixer.http}/healthz", START_TIMEOUT, procs=[mixer.proc])
        wait_for(lambda: accepts_connections(ip, MIXER_GRPC_PORT), START_TIMEOUT, ignore=(OSError,))
        return mixer

    def start_app(self, service: str, version: str | None, ip: str, port: int = 8080) -> Proc:
        """The test app (e2e/app.py) on `ip:port`, once it answers."""
        argv = [sys.executable, APP, "--ip", ip, "--port", str(port), "--service", service]
        argv += ["--version", version or ""]
        proc = self.processes.start(f"app-{service}-{ip}", argv)
        wait_http_ok(f"http://{ip}:{port}/", START_TIMEOUT, procs=[proc])
        return proc

    def start_sidecar(
        self,
        service: str,
        version: str | None,
        ip: str,
        app_port: int = 8080,
        *,
        labels: Iterable[str] = (),
        xds: str | None = None,
        token: str | None = MINT,
        xds_protocol: str | None = None,
        locality: str | None = None,
    ) -> Proc:
        """`meshpilot sidecar` (a real Envoy) for an instance; does not wait. `token`: by
        default one minted for the instance when it joins this test's secure control plane;
        None for none. `xds_protocol`: "delta" or "sotw" (None: the sidecar's default).
        `locality`: its `--locality` (None: none)."""
        argv = [MESHPILOT, "sidecar", "--service", service, "--ip", ip]
        argv += ["--app-port", str(app_port), "--xds", xds or self._xds()]
        argv += ["--xds-protocol", xds_protocol] if xds_protocol else []
        argv += ["--locality", locality] if locality else []
        argv += ["--version", version] if version else []
        for label in labels:
            argv += ["--label", label]
        if token == MINT:
            token = self._minted(service, version, labels) if xds is None else None
        if token is not None:
            argv += ["--token-file", str(self.token_file(token, f"{service}-{ip}"))]
        return self.processes.start(f"sidecar-{service}-{ip}", argv)

    def start_gateway(self, name: str, ip: str | None = None) -> EnvoyAdmin:
        """`meshpilot sidecar --gateway` for the mesh's gateway `name` (its admin on a fresh
        IP unless given), with a token when the control plane is secure; waits until LIVE."""
        ip = ip or self.ips.ip()
        argv = [MESHPILOT, "sidecar", "--service", name, "--gateway", "--ip", ip]
        argv += ["--xds", self._xds()]
        token = self._minted(name, None, ())
        if token is not None:
            argv += ["--token-file", str(self.token_file(token, f"{name}-{ip}"))]
        proc = self.processes.start(f"gateway-{name}-{ip}", argv)
        admin = EnvoyAdmin(f"http://{ip}:{ENVOY_ADMIN_PORT}")
        wait_envoy_live(admin.url, START_TIMEOUT, procs=[proc])
        return admin

    def _minted(self, service: str, version: str | None, labels: Iterable[str]) -> str | None:
        """A token for exactly what the sidecar claims, if the control plane is secure."""
        if self.control_plane is None or not self.control_plane.secure:
            return None
        claimed = dict(label.split("=", 1) for label in labels)
        if version:
            claimed["version"] = version
        return self.token(service, claimed)

    def start_instance(
        self,
        service: str,
        version: str | None = None,
        app_port: int = 8080,
        *,
        labels: Iterable[str] = (),
        xds: str | None = None,
        ip: str | None = None,
        wait: bool = True,
        token: str | None = MINT,
        xds_protocol: str | None = None,
        locality: str | None = None,
    ) -> Instance:
        """App + sidecar on a fresh IP; waits until the app answers and Envoy is LIVE
        (i.e. it got its configuration from the control plane)."""
        ip = ip or self.ips.ip()
        app = self.start_app(service, version, ip, app_port)
        sidecar = self.start_sidecar(
            service,
            version,
            ip,
            app_port,
            labels=labels,
            xds=xds,
            token=token,
            xds_protocol=xds_protocol,
            locality=locality,
        )
        instance = Instance(service, version, ip, app_port, app, sidecar)
        if wait:
            wait_envoy_live(instance.admin.url, START_TIMEOUT, procs=[sidecar])
        self.instances.append(instance)
        return instance

    def stop_instance(self, instance: Instance) -> None:
        """Sidecar first (its stream ends, the endpoint goes away), then the app."""
        self.processes.stop(instance.sidecar)
        self.processes.stop(instance.app)
        self.instances.remove(instance)

    def _xds(self) -> str:
        """The control plane, or every replica (the sidecar picks one, and fails over)."""
        if self.replicas:
            return ",".join(replica.xds for replica in self.replicas)
        if self.control_plane is None:
            raise RuntimeError("start a control plane first, or pass xds=")
        return self.control_plane.xds

    def start_command_app(
        self, service: str, ip: str, port: int, argv: Sequence[str], *, name: str = "app"
    ) -> Proc:
        """Any app command (a TCP or gRPC server) on `ip:port`, once it accepts connections."""
        proc = self.processes.start(f"{name}-{service}-{ip}", argv)
        wait_for(
            lambda: accepts_connections(ip, port),
            START_TIMEOUT,
            message=f"{ip}:{port} to accept connections",
            ignore=(OSError,),
            procs=[proc],
        )
        return proc

    def start_command_instance(
        self,
        service: str,
        version: str | None,
        app_argv: Callable[[str, int], Sequence[str]],
        app_port: int = 8080,
        *,
        labels: Iterable[str] = (),
        ip: str | None = None,
    ) -> Instance:
        """Like `start_instance`, with the app started as `app_argv(ip, app_port)` instead of the
        HTTP test app; waits until the app accepts connections and Envoy is LIVE."""
        ip = ip or self.ips.ip()
        app = self.start_command_app(service, ip, app_port, app_argv(ip, app_port))
        sidecar = self.start_sidecar(service, version, ip, app_port, labels=labels)
        instance = Instance(service, version, ip, app_port, app, sidecar)
        wait_envoy_live(instance.admin.url, START_TIMEOUT, procs=[sidecar])
        self.instances.append(instance)
        return instance


def accepts_connections(ip: str, port: int, timeout: float = 1.0) -> bool:
    """True when a TCP connection to `ip:port` opens (OSError when it does not)."""
    with socket.create_connection((ip, port), timeout=timeout):
        return True
