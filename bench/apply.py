"""Save -> applied for a large mesh file, no proxies: the file watch, the debounce, loading and
translation, and nothing else (issue 14: 1,000 services, <= 150 ms).

Starts `meshpilot serve --insecure` on a mesh of S synthetic services (bench/fanout.py's), then
saves it R times, each save changing one service's route weights, and reads `applied_at` from
`/mesh` after each. Prints the median and max, in milliseconds.

    python bench/apply.py [--services 1000] [--saves 20] [--ip 127.0.89.1]
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "e2e"))

from common import check_free, raise_exit
from fanout import mesh_yaml
from harness.mesh import MESHPILOT
from harness.processes import Processes
from harness.wait import http_json, wait_http_ok

from meshpilot.admin.api import parse_utc_timestamp
from tests.support.wait import wait_for

XDS_PORT, ADMIN_PORT = 18000, 18001


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--ip", default="127.0.89.1")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_exit)
    check_free(args.ip, [XDS_PORT, ADMIN_PORT], "--ip")
    with tempfile.TemporaryDirectory(prefix="meshpilot-apply-") as tmp:
        mesh = Path(tmp) / "mesh.yaml"
        mesh.write_text(mesh_yaml(args.services))
        admin = f"http://{args.ip}:{ADMIN_PORT}"
        procs = Processes(Path(tmp) / "logs")
        try:
            argv = [MESHPILOT, "serve", str(mesh), "--xds", f"{args.ip}:{XDS_PORT}", "--insecure"]
            plane = procs.start("controlplane", [*argv, "--admin", f"{args.ip}:{ADMIN_PORT}"])
            wait_http_ok(f"{admin}/healthz", 30, procs=[plane])
            print(f"{args.services} services, {len(mesh.read_bytes()) >> 10} KiB of YAML")
            applied = [
                save(mesh, admin, mesh_yaml(args.services, reweighted=n + 1))
                for n in range(args.saves)
            ]
        finally:
            procs.stop_all()
    ms = sorted(a * 1000 for a in applied)
    print(
        f"save -> applied over {args.saves} saves: median {statistics.median(ms):.0f} ms, "
        f"max {ms[-1]:.0f} ms"
    )


def save(mesh: Path, admin: str, text: str) -> float:
    """Write `text` and return the seconds until the control plane applied it."""
    before = http_json(f"{admin}/mesh")["applied_at"]
    saved = time.time()
    mesh.write_text(text)
    wait_for(lambda: http_json(f"{admin}/mesh")["applied_at"] != before, 10, 0.005)
    return parse_utc_timestamp(http_json(f"{admin}/mesh")["applied_at"]) - saved


if __name__ == "__main__":
    main()
