"""`meshpilot up`: a whole mesh on this host, without Docker.

The control plane, the mixer (when the mesh needs one) and every `run:` replica with its own
real Envoy sidecar, each replica on its own loopback IP so that all sidecars use the same ports
as under docker-compose. Processes log into a run directory; a replica that crashes is restarted
with back-off; SIGINT or SIGTERM stops everything that was started.

With `--netns` (root), each replica runs in its own network namespace instead (runner/netns.py):
its app, sidecar admin and outbound port on 127.0.0.1 in there, only the sidecar's inbound port
on its address on a host bridge, where the control plane's xDS port and the mixer listen too.

Secure as `serve` is: the control plane keeps its CA and token key in the run directory's
`state/`, and `up` issues a join token (0600, in `tokens/`) for each replica and the mixer.

With `--replicas N` (N > 1), `up` runs a local etcd (data in the run directory's `etcd/`) and N
control planes on it (`serve --store`), each on its own loopback IP; every sidecar lists all of
them, and they share the state directory (one CA).
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from meshpilot.admin.client import ADMIN_API, get_json
from meshpilot.admin.status import format_table
from meshpilot.errors import MeshpilotError
from meshpilot.identity.authority import open_token_authority
from meshpilot.identity.state import private_dir, write_file
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.schema import MeshSpec
from meshpilot.model.names import MIXER_SERVICE
from meshpilot.model.proxies import ADMIN_PORT, OUTBOUND_PORT
from meshpilot.runner import netns
from meshpilot.runner.addresses import up_allocator
from meshpilot.runner.etcd import client_url, etcd_argv
from meshpilot.runner.processes import Supervised, Supervisor
from meshpilot.translator.build import build_ir
from meshpilot.wording import counted, serving

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
MESHPILOT = [sys.executable, "-m", "meshpilot"]


@dataclass(frozen=True)
class Replica:
    """One local instance of a service: its app command (filled in) and where it runs."""

    service: str
    version: str | None
    index: int
    ip: str
    app_port: int
    command: str
    env: dict[str, str]
    labels: tuple[str, ...]
    local_ip: str | None = None  # with its own namespace: the app's, admin's and outbound's IP
    netns: str | None = None
    locality: str | None = None  # the run entry's, given to its sidecar

    @property
    def name(self) -> str:
        return f"{self.service}-{self.version or 'default'}-{self.index}"

    @property
    def app_ip(self) -> str:
        """Where the app, the sidecar's admin and its outbound port listen."""
        return self.local_ip or self.ip


def plan_replicas(
    spec: MeshSpec, next_ip: Callable[[], str], local_ip: str | None = None
) -> list[Replica]:
    """Every replica of every `run:` entry, each with a fresh IP, services in name order.
    With `local_ip` (own namespaces), that is the app's `{ip}` and MESH_IP."""
    replicas = []
    for service in sorted(spec.services):
        for run in spec.services[service].run:
            for index in range(run.replicas):
                ip = next_ip()
                values = {
                    "ip": local_ip or ip,
                    "app_port": str(run.app_port),
                    "service": service,
                    "version": run.version or "",
                }
                env = {f"MESH_{k.upper()}": v for k, v in values.items()} | run.env
                labels = tuple(f"{k}={v}" for k, v in sorted(run.labels.items()))
                command = run.command.format(**values)
                replicas.append(
                    Replica(
                        service,
                        run.version,
                        index,
                        ip,
                        run.app_port,
                        command,
                        env,
                        labels,
                        local_ip=local_ip,
                        locality=run.locality,
                    )
                )
    return replicas


@dataclass(frozen=True)
class Addresses:
    xds: str
    admin: str
    mixer: str | None
    metrics: str | None
    more_planes: tuple[tuple[str, str], ...] = ()  # (xds, admin) of the other replicas
    etcd_ip: str | None = None  # with replicas: the local etcd they share

    @property
    def planes(self) -> tuple[tuple[str, str], ...]:
        """Every control plane's (xds, admin), the first one first."""
        return ((self.xds, self.admin), *self.more_planes)

    @property
    def sidecar_xds(self) -> str:
        """What sidecars are given as `--xds`: every control plane."""
        return ",".join(xds for xds, _ in self.planes)


class LocalMesh:
    """Everything `up` starts, and the order it starts and checks it in."""

    def __init__(self, mesh_path: Path, addresses: Addresses, run_dir: Path) -> None:
        self.mesh_path = mesh_path.resolve()
        self.addresses = addresses
        self.run_dir = run_dir
        self.state_dir = run_dir / "state"
        self.supervisor = Supervisor()

    def token_file(self, name: str, service: str, labels: dict[str, str] | None = None) -> Path:
        """A join token for `service` with `labels`, in a file only this user can read."""
        token = open_token_authority(self.state_dir).issue(service, labels)
        path = self.run_dir / "tokens" / name
        private_dir(path.parent)
        write_file(path, token.encode(), secret=True)
        return path

    def _start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        namespace: str | None = None,
    ) -> None:
        argv = netns.exec_argv(namespace, argv) if namespace else argv
        self.supervisor.start(Supervised(name, argv, self.run_dir / f"{name}.log", env or {}))

    def start_control_plane(self) -> None:
        """The control plane (with replicas: etcd, then every replica), then the mixer."""
        store = self._start_etcd()
        for index, (xds, admin) in enumerate(self.addresses.planes):
            argv = [*MESHPILOT, "serve", str(self.mesh_path), "--xds", xds]
            argv += ["--admin", admin, "--state-dir", str(self.state_dir)]
            argv += ["--store", store] if store else []
            if self.addresses.mixer:
                argv += ["--mixer", self.addresses.mixer]
            if self.addresses.metrics:
                argv += ["--mixer-metrics", self.addresses.metrics]
            name = f"controlplane-{index + 1}" if store else "controlplane"
            self._start(name, argv)
            # One at a time: the first makes the CA in the state directory the others read.
            _wait_until(f"http://{admin}/healthz", b"ok", f"the control plane ({name})")
        if self.addresses.mixer and self.addresses.metrics:
            argv = [*MESHPILOT, "mixer", str(self.mesh_path), "--listen", self.addresses.mixer]
            argv += ["--metrics", self.addresses.metrics, "--xds", self.addresses.xds]
            argv += ["--token-file", str(self.token_file("mixer", MIXER_SERVICE))]
            self._start("mixer", argv)

    def _start_etcd(self) -> str | None:
        """With replicas, a one-member etcd for them; its `--store` URL."""
        ip = self.addresses.etcd_ip
        if ip is None:
            return None
        self._start("etcd", etcd_argv("meshpilot", self.run_dir / "etcd", {"meshpilot": ip}))
        _wait_until(f"{client_url(ip)}/health", b'"health":"true"', "etcd")
        return f"etcd://{ip}:2379"

    def start_replica(self, replica: Replica) -> None:
        app = [
            "/bin/sh",
            "-c",
            f"cd {_quote(str(self.mesh_path.parent))} && exec {replica.command}",
        ]
        self._start(f"{replica.name}.app", app, replica.env, replica.netns)
        sidecar = [*MESHPILOT, "sidecar", "--service", replica.service, "--ip", replica.ip]
        sidecar += ["--app-port", str(replica.app_port), "--xds", self.addresses.sidecar_xds]
        sidecar += ["--version", replica.version] if replica.version else []
        sidecar += ["--local-ip", replica.local_ip] if replica.local_ip else []
        sidecar += ["--locality", replica.locality] if replica.locality else []
        for label in replica.labels:
            sidecar += ["--label", label]
        labels = dict(label.split("=", 1) for label in replica.labels)
        if replica.version:
            labels["version"] = replica.version
        token = self.token_file(replica.name, replica.service, labels)
        sidecar += ["--token-file", str(token)]
        self._start(f"{replica.name}.envoy", sidecar, namespace=replica.netns)

    def start_gateway(self, name: str, ip: str) -> None:
        """The gateway's Envoy, on the host: its admin on `ip`, its listener where the mesh says."""
        argv = [*MESHPILOT, "sidecar", "--service", name, "--gateway", "--ip", ip]
        argv += ["--xds", self.addresses.sidecar_xds]
        argv += ["--token-file", str(self.token_file(name, name))]
        self._start(f"{name}.gateway", argv)

    def wait_ready(self, replicas: list[Replica]) -> None:
        for r in replicas:
            _wait_until(f"http://{r.app_ip}:{ADMIN_PORT}/ready", b"LIVE", r.name, r.netns)

    def stop(self) -> None:
        log.info("stopping %s", counted(len(self.supervisor.members), "process", "processes"))
        self.supervisor.stop_all()


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _wait_until(url: str, expected: bytes, what: str, namespace: str | None = None) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if expected in _get(url, namespace):
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    url += f" in network namespace {namespace}" if namespace else ""
    raise MeshpilotError(f"{what} did not become ready within {READY_TIMEOUT_S:.0f} s ({url})")


def _get(url: str, namespace: str | None, timeout: float = 1.0) -> bytes:
    """The body of GET `url` (whatever the status), sent from this host or from `namespace`."""
    parts = urlsplit(url)
    address = (parts.hostname or "", parts.port or 80)
    sock = (
        netns.connect(namespace, address, timeout)
        if namespace
        else socket.create_connection(address, timeout)
    )
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    conn.sock = sock
    try:
        conn.request("GET", parts.path or "/")
        return conn.getresponse().read()
    finally:
        conn.close()


def describe(spec: MeshSpec, mesh: LocalMesh, replicas: list[Replica]) -> str:
    a = mesh.addresses
    lines = [
        f"mesh '{spec.mesh}' from {mesh.mesh_path}; logs in {mesh.run_dir}",
        f"control plane: xds {a.xds}, admin http://{a.admin} "
        f"({meshpilot_command()} status --admin {a.admin})",
        *(f"control plane replica: xds {x}, admin http://{admin}" for x, admin in a.more_planes),
        *([f"etcd (the replicas' store): {client_url(a.etcd_ip)}"] if a.etcd_ip else []),
        f"web console: http://{a.admin}/ui",
    ]
    if a.mixer:
        lines.append(f"mixer: grpc {a.mixer}, metrics http://{a.metrics}/metrics")
    isolated = any(r.netns for r in replicas)
    if isolated:
        lines.append(
            "each instance has its own network namespace (NETNS): only its sidecar's inbound "
            f"port faces the others; from inside, `sudo ip netns exec NETNS ...` reaches the "
            f"app, admin and outbound ports on {netns.LOCAL_IP}"
        )
    rows = [["SERVICE", "VERSION", "IP", *(["NETNS"] if isolated else []), "APP PORT"]]
    rows[0] += ["SIDECAR ADMIN", "CALL OTHERS VIA"]
    rows += [
        [
            r.service,
            r.version or "-",
            r.ip,
            *([r.netns or "-"] if isolated else []),
            str(r.app_port),
            f"http://{r.app_ip}:{ADMIN_PORT}",
            f"http://{r.app_ip}:{OUTBOUND_PORT} (Host: <service>)",
        ]
        for r in replicas
    ]
    lines += ["", format_table(rows), *_gateway_lines(spec)]
    lines += ["", "try:", *_suggestions(spec, mesh, replicas)]
    return "\n".join(lines)


def _gateway_lines(spec: MeshSpec) -> list[str]:
    """Where each gateway lets traffic in, and for which hosts."""
    lines = []
    for name in sorted(spec.gateways):
        gateway = spec.gateways[name]
        scheme = "https" if gateway.tls else "http"
        lines.append(
            f"gateway {name}: {scheme}://{gateway.listen} (Host: {', '.join(gateway.hosts)})"
        )
    return ["", *lines] if lines else []


def _suggestions(spec: MeshSpec, mesh: LocalMesh, replicas: list[Replica]) -> list[str]:
    """Three things to try: a call through a sidecar, a live edit, and where to watch."""
    tries = []
    for name in sorted(spec.gateways)[:1]:
        gateway = spec.gateways[name]
        host = next((h for h in gateway.hosts if h != "*"), "anything")
        scheme, insecure = ("https", "-k ") if gateway.tls else ("http", "")
        tries.append(
            f"  curl {insecure}-H 'Host: {host}' {scheme}://{gateway.listen}/"
            f"     # into the mesh through gateway {name}"
        )
    entry = next((r for name in spec.services for r in replicas if r.service == name), None)
    if entry is not None:
        inside = f"sudo ip netns exec {entry.netns} " if entry.netns else ""
        tries.append(
            f"  {inside}curl -H 'Host: {entry.service}' http://{entry.app_ip}:{OUTBOUND_PORT}/"
            f"     # call {entry.service} through a sidecar"
        )
    tries.append(f"  edit {mesh.mesh_path} (weights, routes) and save     # applied live")
    watch = f"  {meshpilot_command()} status --admin {mesh.addresses.admin}"
    if mesh.addresses.metrics:
        watch += f"   and   http://{mesh.addresses.metrics}/metrics"
    tries.append(watch)
    return tries


def meshpilot_command() -> str:
    """How to run this meshpilot from the user's shell: `meshpilot` when that is the one on
    PATH, else this one's absolute path (`make demo` does not put `.venv/bin` on PATH)."""
    script = Path(sys.executable).parent / "meshpilot"
    if not script.exists():
        return f"{sys.executable} -m meshpilot"
    on_path = shutil.which("meshpilot")
    if on_path is not None and Path(on_path).resolve() == script.resolve():
        return "meshpilot"
    return str(script.absolute())


class SaveReports:
    """Tells the `up` terminal about saves of the mesh file, from the control plane's `/mesh`:
    a rejected save's problems and which version keeps serving, and each applied version."""

    def __init__(self, mesh_path: Path, admin: str) -> None:
        self.mesh_path = mesh_path
        self.admin = admin
        self._version: str | None = None
        self._problems: list[str] = []

    def check(self) -> None:
        try:
            shown = get_json(ADMIN_API, self.admin, "/mesh")
        except MeshpilotError:
            return  # restarting: the supervisor says so
        version, problems = shown["version"], shown["problems"]
        if problems and problems != self._problems:
            print("\n".join(problems), flush=True)
            print(f"{self.mesh_path} not applied; {serving(version)}", flush=True)
        elif not problems and (self._problems or self._version not in (None, version)):
            print(f"{self.mesh_path} applied: version {version}", flush=True)
        self._version, self._problems = version, problems


class _Stop:
    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True


def run_up(
    mesh_path: Path,
    xds: str | None,
    admin: str | None,
    listen: str | None,
    metrics: str | None,
    isolate: bool = False,
    control_planes: int = 1,
) -> int:
    if isolate and control_planes > 1:
        raise MeshpilotError("--replicas and --netns cannot be used together yet")
    if isolate:
        netns.require_root()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s up: %(message)s")
    spec = load_mesh(mesh_path)
    needs_mixer = build_ir(spec, mesh_path.parent).mixer is not None
    stop = _Stop()
    with contextlib.ExitStack() as cleanup:  # undone in reverse: processes, bridge, loopback IPs
        ips = up_allocator()
        cleanup.callback(ips.release)
        bridge = cleanup.enter_context(netns.Bridge(os.getpid())) if isolate else None
        plane_ip = ips.ip()
        shared_ip = bridge.ip if bridge else plane_ip  # where sidecars reach xDS and the mixer
        more_ips = [ips.ip() for _ in range(control_planes - 1)]
        addresses = Addresses(
            xds or f"{shared_ip}:18000",
            admin or f"{plane_ip}:18001",
            (listen or f"{shared_ip}:18081") if needs_mixer else None,
            (metrics or f"{plane_ip}:18082") if needs_mixer else None,
            tuple((f"{ip}:18000", f"{ip}:18001") for ip in more_ips),
            plane_ip if more_ips else None,
        )
        run_dir = Path(".run") / f"{spec.mesh}-{time.strftime('%Y%m%d-%H%M%S')}-{plane_ip}"
        run_dir.mkdir(parents=True, exist_ok=True)
        mesh = LocalMesh(mesh_path, addresses, run_dir.resolve())
        cleanup.callback(mesh.stop)
        mesh.start_control_plane()
        if bridge:
            replicas = plan_replicas(spec, bridge.next_ip, netns.LOCAL_IP)
            replicas = [replace(r, netns=bridge.add_namespace(r.name, r.ip)) for r in replicas]
        else:
            replicas = plan_replicas(spec, ips.ip)
        for replica in replicas:
            mesh.start_replica(replica)
        gateway_ips = {name: ips.ip() for name in sorted(spec.gateways)}
        for name, ip in gateway_ips.items():
            mesh.start_gateway(name, ip)
        mesh.wait_ready(replicas)
        for name, ip in gateway_ips.items():
            _wait_until(f"http://{ip}:{ADMIN_PORT}/ready", b"LIVE", f"gateway {name}")
        print(describe(spec, mesh, replicas), flush=True)
        print("\nready; Ctrl-C stops everything", flush=True)
        saves = SaveReports(mesh.mesh_path, addresses.admin)
        while not stop.requested:
            mesh.supervisor.check()
            saves.check()
            time.sleep(0.25)
    return 0
