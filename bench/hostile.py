"""Hostile-client benchmark: save -> every real sidecar SYNCED, with and without the attacks of
issue 13 running against the same control plane, in one run.

Starts a secure `meshpilot serve` and N real Envoy sidecars (`meshpilot sidecar --token-file`),
then measures saves in three phases: quiet, under attack, quiet again. The attack runs in a
process of its own, as a compromised workload holding valid join tokens would:
  - `--zero-window` HTTP/2 connections whose ADS stream advertises a zero flow-control window
    (the server can send not one byte of a response);
  - `--silent-rate` new ADS streams per second that read their responses and never ACK them.
Target: under attack, median save -> all SYNCED <= 1.5x the quiet median.

    python bench/hostile.py [--ip-block 127.0.96] [--proxies 4] [--saves 12] [--interval 3]

`--no-peer-limits` turns the per-peer stream limits off, to see the push pools and deadlines
alone hold the line. Saves are `--interval` seconds apart, so the attack phase outlasts the
server's 30 s read and answer deadlines and the per-peer and per-token limits come into play.

Everything it starts is stopped on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

import grpc
from common import check_free, raise_exit
from convergence import converged, mesh_text, route_versions
from harness.mesh import ADMIN_PORT, MESHPILOT, SIDECAR_PORTS, XDS_PORT
from harness.processes import Proc, Processes
from harness.wait import http_get, http_json, wait_for, wait_http_ok

from meshpilot.identity.authority import open_token_authority
from meshpilot.identity.ca import ROOT_CERT
from meshpilot.identity.state import write_file
from meshpilot.model import proxies
from meshpilot.xds.types import CLUSTER
from tests.support.client import AdsClient, sidecar_node
from tests.support.zero_window import ZeroWindowClient

CONVERGE_TIMEOUT = 20.0
START_TIMEOUT = 30.0
POLL_INTERVAL = 0.01
INTRUDER = "intruder"  # a service no sidecar calls: its churn reaches no one's configuration


def intruder_node(name: str, ip: str) -> object:
    return sidecar_node(proxies.Proxy(f"{name}~{ip}", INTRUDER, ip, 8080, ()))


async def attack(
    xds: str, ca_pem: Path, tokens: Path, zero_window: int, silent_rate: float
) -> None:
    """Open the zero-window streams, then silent streams at `silent_rate` per second, for ever."""
    tls = ssl.create_default_context(cafile=str(ca_pem))
    tls.set_alpn_protocols(["h2"])
    token = (tokens / "zero-window").read_text().strip()
    stuck = [
        ZeroWindowClient(xds, intruder_node(f"stuck-{n}", "127.0.0.1"), token, tls)  # type: ignore[arg-type]
        for n in range(zero_window)
    ]
    for client in stuck:
        await client.open()
    print(f"attack: {zero_window} zero-window streams open", flush=True)
    silent_token = (tokens / "silent").read_text().strip()
    credentials = grpc.ssl_channel_credentials(ca_pem.read_bytes())
    n = 0
    while True:
        n += 1
        node = intruder_node(f"silent-{n}", "127.0.0.1")
        client = AdsClient(xds, node, credentials, silent_token)  # type: ignore[arg-type]
        await client.__aenter__()
        client.send(CLUSTER)  # read by the client, never ACKed; ended by the server
        await asyncio.sleep(1 / silent_rate)  # the attack's pace, not a synchronization


def issue_tokens(state: Path, out: Path) -> None:
    """Tokens for the attack (any address: all its streams come from 127.0.0.1)."""
    authority = open_token_authority(state)
    out.mkdir(mode=0o700)
    for name in ("zero-window", "silent"):
        write_file(out / name, authority.issue(INTRUDER, any_address=True).encode(), secret=True)


def start_sidecars(
    procs: Processes, state: Path, tmp: Path, ips: list[str], xds: str
) -> list[Proc]:
    authority = open_token_authority(state)
    started = []
    for n, ip in enumerate(ips):
        version = "v1" if n % 2 == 0 else "v2"
        token = tmp / f"token-{ip}"
        issued = authority.issue("reviews", {"version": version})
        write_file(token, issued.encode(), secret=True)
        argv = [MESHPILOT, "sidecar", "--service", "reviews", "--version", version]
        argv += ["--ip", ip, "--xds", xds, "--token-file", str(token)]
        started.append(procs.start(f"sidecar-{ip}", argv))
    return started


def real(proxies_: list[dict[str, object]]) -> list[dict[str, object]]:
    return [p for p in proxies_ if str(p["node_id"]).startswith("reviews~")]


def save_and_wait(mesh: Path, weight: int, admin: str, count: int, watched: list[Proc]) -> float:
    old = route_versions(real(http_json(f"{admin}/proxies")))  # type: ignore[arg-type]
    saved = time.monotonic()
    mesh.write_text(mesh_text(weight))
    wait_for(
        lambda: converged(real(http_json(f"{admin}/proxies")), count, old),  # type: ignore[arg-type]
        CONVERGE_TIMEOUT,
        interval=POLL_INTERVAL,
        message=f"a save ({weight}% to v1) to converge",
        procs=watched,
    )
    return time.monotonic() - saved


def phase(
    name: str,
    args: argparse.Namespace,
    weights: list[int],
    mesh: Path,
    admin: str,
    watched: list[Proc],
) -> list[float]:
    times = []
    for _ in range(args.saves):
        time.sleep(args.interval)  # the pace of the edits, not a synchronization
        times.append(save_and_wait(mesh, weights.pop(), admin, args.proxies, watched))
        print(f"{name}: {times[-1]:.3f} s ({counters(admin)})", flush=True)
    return times


def counters(admin: str) -> str:
    lines = http_get(f"{admin}/metrics").text.splitlines()
    wanted = (
        "meshpilot_connected_proxies ",
        "meshpilot_xds_streams_ended_total{",
        "meshpilot_xds_streams_refused_total{",
    )
    shown = [line.removeprefix("meshpilot_") for line in lines if line.startswith(wanted)]
    return ", ".join(shown)


def run(args: argparse.Namespace, procs: Processes, tmp: Path) -> None:
    cp_ip = f"{args.ip_block}.1"
    ips = [f"{args.ip_block}.{n}" for n in range(2, 2 + args.proxies)]
    check_free(cp_ip, [XDS_PORT, ADMIN_PORT])
    for ip in ips:
        check_free(ip, SIDECAR_PORTS)
    mesh, state = tmp / "mesh.yaml", tmp / "state"
    mesh.write_text(mesh_text(0))
    xds, admin = f"{cp_ip}:{XDS_PORT}", f"http://{cp_ip}:{ADMIN_PORT}"
    argv = [MESHPILOT, "serve", str(mesh), "--xds", xds, "--admin", f"{cp_ip}:{ADMIN_PORT}"]
    argv += ["--state-dir", str(state)]
    if args.no_peer_limits:
        argv += ["--peer-max-streams", "0", "--peer-stream-rate", "0"]
    control_plane = procs.start("controlplane", argv, cwd=tmp)
    wait_http_ok(f"{admin}/healthz", START_TIMEOUT, procs=[control_plane])
    watched = [control_plane, *start_sidecars(procs, state, tmp, ips, xds)]
    wait_for(
        lambda: converged(real(http_json(f"{admin}/proxies")), args.proxies, {}),  # type: ignore[arg-type]
        START_TIMEOUT,
        message=f"{args.proxies} proxies SYNCED",
        ignore=(OSError,),
        procs=watched,
    )
    weights = [5 * (i % 19 + 1) for i in range(3 * args.saves)]
    quiet = phase("quiet", args, weights, mesh, admin, watched)
    issue_tokens(state, tmp / "attack")
    attacker = procs.start(
        "attacker",
        [
            sys.executable,
            __file__,
            "attack",
            xds,
            str(state / ROOT_CERT),
            str(tmp / "attack"),
            str(args.zero_window),
            str(args.silent_rate),
        ],
    )
    wait_for(
        lambda: "zero-window streams open" in procs.tails(),
        START_TIMEOUT,
        message="the attack to start",
        procs=[attacker],
    )
    attacked = phase("attack", args, weights, mesh, admin, [*watched, attacker])
    seen = counters(admin)
    procs.stop(attacker)
    after = phase("quiet again", args, weights, mesh, admin, watched)
    baseline, under = statistics.median(quiet + after), statistics.median(attacked)
    print()
    print(f"{args.proxies} real sidecars; attack: {args.zero_window} zero-window streams and")
    limits = "off" if args.no_peer_limits else "on"
    print(f"  {args.silent_rate:g} never-ACKing streams per second, from one address")
    print(f"  (per-peer limits {limits})")
    print(
        f"save -> all SYNCED, quiet:        median {baseline:.3f} s (max {max(quiet + after):.3f})"
    )
    print(f"save -> all SYNCED, under attack: median {under:.3f} s (max {max(attacked):.3f})")
    print(f"ratio {under / baseline:.2f}x (target <= 1.5x)")
    print(f"control plane counters at the end of the attack: {seen}")


def main() -> None:
    if sys.argv[1:2] == ["attack"]:
        xds, ca, tokens, zero, rate = sys.argv[2:7]
        asyncio.run(attack(xds, Path(ca), Path(tokens), int(zero), float(rate)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ip-block", default="127.0.96", help="first three octets (127.X.Y)")
    parser.add_argument("--proxies", type=int, default=4)
    parser.add_argument("--saves", type=int, default=12)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between saves")
    parser.add_argument("--zero-window", type=int, default=64)
    parser.add_argument("--silent-rate", type=float, default=50.0)
    parser.add_argument("--no-peer-limits", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_exit)
    with tempfile.TemporaryDirectory(prefix="meshpilot-bench-") as tmp:
        procs = Processes(Path(tmp) / "logs")
        try:
            run(args, procs, Path(tmp))
        except BaseException:
            print(procs.tails(), file=sys.stderr)
            raise
        finally:
            procs.stop_all()


if __name__ == "__main__":
    main()
