"""Translation benchmark: a 10,000-service mesh, full translation and a one-service edit.

Prints medians over several runs. Targets (issue 2): full translation + serialization <= 1 s;
applying a one-service edit <= 20 ms. Also prints load + validation of the same mesh as YAML,
which is not part of either target but is what a save costs before translation starts.

    python bench/translate.py [--services N] [--runs R]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.support

from meshpilot.mesh.load import load_mesh
from meshpilot.model import ir, proxies
from meshpilot.translator.build import build_ir
from meshpilot.translator.translate import Translator
from tests.support import meshgen

DEFAULTS = '{timeout: 15s, retries: {attempts: 2, "on": [connect-failure]}}'


def mesh_yaml(services: int) -> str:
    """S synthetic services (tests.support.meshgen): two subsets, a weighted route and two
    static endpoints each; mesh-wide timeout and retry defaults."""
    return meshgen.mesh_yaml(services, name="bench", defaults=DEFAULTS)


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def edit_one_service(mesh: ir.MeshIR, index: int) -> ir.MeshIR:
    """The same mesh with one service's canary weights changed."""
    services = list(mesh.services)
    old = services[index]
    route = old.routes[0]
    weight = 50 + index % 40
    new_to = (ir.Destination("v1", weight), ir.Destination("v2", 100 - weight))
    services[index] = dataclasses.replace(old, routes=(dataclasses.replace(route, to=new_to),))
    return dataclasses.replace(mesh, services=tuple(services))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mesh.yaml"
        path.write_text(mesh_yaml(args.services))
        load_times = [timed(lambda: build_ir(load_mesh(path))) for _ in range(min(args.runs, 3))]
        mesh = build_ir(load_mesh(path))

    proxy = proxies.Proxy("bench~127.0.0.1", "svc-0", "127.0.0.1", 8080, (("version", "v1"),))
    full = []
    for _ in range(args.runs):
        translator = Translator()
        full.append(timed(lambda t=translator: t.view(t.translate(mesh, []), proxy)))

    translator = Translator()
    translator.view(translator.translate(mesh, []), proxy)
    edits = []
    for run in range(args.runs * 4):
        edited = edit_one_service(mesh, (run * 7919) % args.services)
        edits.append(timed(lambda m=edited: translator.view(translator.translate(m, []), proxy)))

    print(f"services: {args.services}")
    print(f"load + validate + build IR (YAML): median {statistics.median(load_times):.3f} s")
    print(
        f"full translation + serialization: median {statistics.median(full):.3f} s (target <= 1 s)"
    )
    print(f"one-service edit: median {statistics.median(edits) * 1000:.1f} ms (target <= 20 ms)")


if __name__ == "__main__":
    main()
