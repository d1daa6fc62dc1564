"""Convergence benchmark: real Envoy sidecars, a save of the mesh file -> every proxy SYNCED.

Starts `meshpilot serve` and N `meshpilot sidecar`s (real Envoys; no apps, they are not needed
for xDS) on loopback addresses of one block, then saves the mesh file with new weights S times.
After each save it polls the admin API's `/proxies` every ~10 ms until every proxy ACKed what
it was sent, for every type, and holds a route table (RDS) version different from before the
save. Target: median and max <= 0.5 s, the debounce included.

Also splits each save into "save -> applied" (file watch, debounce, load, translation; from
`/mesh` `applied_at`) and "applied -> all SYNCED" (pushes and Envoy's ACKs).

    python bench/convergence.py [--ip-block 127.0.77] [--proxies 10] [--saves 20]

Everything it starts is stopped on exit, whatever happens.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from common import check_free, raise_exit
from harness.mesh import ADMIN_PORT, MESHPILOT, SIDECAR_PORTS, XDS_PORT
from harness.processes import Proc, Processes
from harness.wait import http_get, http_json, wait_for, wait_http_ok
from meshes import reviews_mesh

from meshpilot.admin.api import parse_utc_timestamp

ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
POLL_INTERVAL = 0.01
CONVERGE_TIMEOUT = 10.0
START_TIMEOUT = 30.0


def mesh_text(v1_weight: int) -> str:
    return reviews_mesh(v1_weight, 100 - v1_weight)


def converged(proxies: list[dict[str, Any]], count: int, old_routes: dict[str, str]) -> bool:
    """Every one of `count` proxies ACKed what it was sent for every type, is SYNCED, and has a
    route table version other than `old_routes[node]` (empty dict: any version will do)."""
    if len(proxies) != count:
        return False
    for proxy in proxies:
        types = proxy["types"]
        if not types or any(
            t["status"] != "SYNCED" or t["acked_version"] != t["sent_version"]
            for t in types.values()
        ):
            return False
        if types[ROUTE]["acked_version"] == old_routes.get(proxy["node_id"]):
            return False
    return True


def route_versions(proxies: list[dict[str, Any]]) -> dict[str, str]:
    return {p["node_id"]: p["types"][ROUTE]["acked_version"] for p in proxies}


def histogram(metrics: str, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram from its text exposition."""
    values = dict(
        line.split(" ", 1) for line in metrics.splitlines() if line.startswith(f"{name}_")
    )
    return float(values[f"{name}_sum"]), float(values[f"{name}_count"])


def run(args: argparse.Namespace, procs: Processes, tmp: Path) -> None:
    cp_ip = f"{args.ip_block}.1"
    sidecar_ips = [f"{args.ip_block}.{n}" for n in range(2, 2 + args.proxies)]
    check_free(cp_ip, [XDS_PORT, ADMIN_PORT])
    for ip in sidecar_ips:
        check_free(ip, SIDECAR_PORTS)

    mesh = tmp / "mesh.yaml"
    mesh.write_text(mesh_text(0))
    xds, admin = f"{cp_ip}:{XDS_PORT}", f"http://{cp_ip}:{ADMIN_PORT}"
    control_plane = procs.start(
        "controlplane",
        [
            MESHPILOT,
            "serve",
            str(mesh),
            "--xds",
            xds,
            "--admin",
            f"{cp_ip}:{ADMIN_PORT}",
            "--insecure",
        ],
        cwd=tmp,
    )
    wait_http_ok(f"{admin}/healthz", START_TIMEOUT, procs=[control_plane])
    watched: list[Proc] = [control_plane]
    for n, ip in enumerate(sidecar_ips):
        version = "v1" if n % 2 == 0 else "v2"
        argv = [MESHPILOT, "sidecar", "--service", "reviews", "--version", version]
        argv += ["--ip", ip, "--xds", xds]
        watched.append(procs.start(f"sidecar-{ip}", argv))
    wait_for(
        lambda: converged(http_json(f"{admin}/proxies"), args.proxies, {}),
        START_TIMEOUT,
        message=f"{args.proxies} proxies SYNCED",
        ignore=(OSError,),
        procs=watched,
    )
    cp_sum, cp_count = histogram(
        http_get(f"{admin}/metrics").text, "meshpilot_config_convergence_seconds"
    )

    totals, applied, pushed = [], [], []
    for i in range(1, args.saves + 1):
        old_routes = route_versions(http_json(f"{admin}/proxies"))
        saved_wall, saved = time.time(), time.monotonic()
        mesh.write_text(mesh_text(5 * i))
        wait_for(
            lambda old=old_routes: converged(http_json(f"{admin}/proxies"), args.proxies, old),
            CONVERGE_TIMEOUT,
            interval=POLL_INTERVAL,
            message=f"save {i} to converge",
            procs=watched,
        )
        done_wall, total = time.time(), time.monotonic() - saved
        applied_at = parse_utc_timestamp(http_json(f"{admin}/mesh")["applied_at"])
        totals.append(total)
        applied.append(applied_at - saved_wall)
        pushed.append(done_wall - applied_at)
        print(f"save {i:2}: {total:.3f} s (applied after {applied[-1]:.3f} s)", flush=True)

    new_sum, new_count = histogram(
        http_get(f"{admin}/metrics").text, "meshpilot_config_convergence_seconds"
    )
    print()
    print(f"proxies: {args.proxies} real Envoy sidecars; saves: {args.saves}")
    print(
        f"save -> all SYNCED (new version): median {statistics.median(totals):.3f} s, "
        f"max {max(totals):.3f} s, min {min(totals):.3f} s"
    )
    split_applied, split_pushed = statistics.median(applied), statistics.median(pushed)
    print(f"  save -> applied (watch + debounce + translation): p50 {split_applied:.3f} s")
    print(f"  applied -> all SYNCED (push + ACK, debounce-free): p50 {split_pushed:.3f} s")
    if new_count > cp_count:
        mean = (new_sum - cp_sum) / (new_count - cp_count)
        print(
            f"  control plane's own meshpilot_config_convergence_seconds: "
            f"{new_count - cp_count:.0f} observations, mean {mean:.3f} s"
        )
    print(f"polled /proxies every {POLL_INTERVAL * 1000:.0f} ms (adds up to that much)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ip-block", default="127.0.77", help="first three octets (127.X.Y)")
    parser.add_argument("--proxies", type=int, default=10)
    parser.add_argument("--saves", type=int, default=20)
    args = parser.parse_args()
    if not 1 <= args.proxies <= 250:
        parser.error("--proxies must be 1..250")
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
