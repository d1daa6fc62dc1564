"""Locality load balancing's cost on the control plane: CPU for a membership change (one
sidecar joins) until every proxy's view is assembled, with and without localities.

S synthetic services (tests.support.meshgen) and P proxies, proxy i an instance of service
i % S; "localities": every proxy (so every member) in one of three zones; "failover": every
service has outlier detection, so callers with a locality get endpoints of their own.

    python bench/locality_views.py [--services S] [--proxies P] [--changes N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from meshpilot.mesh.load import parse_mesh
from meshpilot.model import ir, proxies
from meshpilot.model.locality import Locality
from meshpilot.translator.build import build_ir
from meshpilot.translator.translate import Translator
from tests.support import meshgen

ZONES = (Locality("eu-west", "a"), Locality("eu-west", "b"), Locality("us-east", "a"))
DETECTION = "    outlier_detection: {consecutive_5xx: 3}\n    subsets:"


def mesh(services: int, failover: bool) -> ir.MeshIR:
    text = meshgen.mesh_yaml(services)
    if failover:
        text = text.replace("    subsets:", DETECTION)
    return build_ir(parse_mesh(text, "bench.yaml"), secure=False)


def proxy(index: int, services: int, localities: bool) -> proxies.Proxy:
    ip = f"10.{index // 250 % 250}.{index % 250}.1"
    where = ZONES[index % len(ZONES)] if localities else None
    service = meshgen.service_name(index % services)
    return proxies.Proxy(f"p{index}", service, ip, 8080, (("version", "v1"),), locality=where)


def membership_changes(
    services: int, fleet_size: int, changes: int, localities: bool, failover: bool
) -> list[float]:
    """CPU seconds per change: translate with one more member, then every proxy's view."""
    built = mesh(services, failover)
    fleet = [proxy(i, services, localities) for i in range(fleet_size)]
    translator = Translator()
    shared = translator.translate(built, [p.instance for p in fleet if p.instance])
    for member in fleet:
        translator.view(shared, member)
    times = []
    for extra in range(changes):
        fleet.append(proxy(fleet_size + extra, services, localities))
        start = time.process_time()
        shared = translator.translate(built, [p.instance for p in fleet if p.instance])
        for member in fleet:
            translator.view(shared, member)
        times.append(time.process_time() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--proxies", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=15)
    args = parser.parse_args()
    for localities, failover in ((False, False), (False, True), (True, False), (True, True)):
        times = membership_changes(args.services, args.proxies, args.changes, localities, failover)
        print(
            f"localities={localities!s:5} failover={failover!s:5}: change -> every view, CPU "
            f"median {statistics.median(times) * 1000:.1f} ms, min {min(times) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
