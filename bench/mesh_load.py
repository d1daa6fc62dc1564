"""Reading a mesh file, stage by stage: what a save costs before translation starts.

Times YAML composition with each parser PyYAML offers here (libyaml's C parser, the Python one),
then the stages after it, on bench/translate.py's mesh. Prints medians, in milliseconds.

    python bench/mesh_load.py [--services N] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from translate import mesh_yaml

from meshpilot.gc_pause import gc_paused
from meshpilot.mesh import compose
from meshpilot.mesh.load import parse_mesh
from meshpilot.mesh.nodes import Tree
from meshpilot.mesh.references import cross_checks
from meshpilot.mesh.schema import MeshSpec


def median_ms(func: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        with gc_paused():  # as parse_mesh runs
            start = time.perf_counter()
            func()
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    text = mesh_yaml(args.services)
    print(f"services: {args.services} ({len(text) // 1024} KiB of YAML), medians of {args.runs}")

    for loader in compose.LOADERS:
        original, compose.LOADER = compose.LOADER, loader
        try:
            ms = median_ms(lambda: compose.compose(text, "mesh.yaml"), args.runs)
        finally:
            compose.LOADER = original
        print(f"compose ({loader.__name__}): {ms:.1f} ms")

    root = compose.compose(text, "mesh.yaml")
    assert root is not None
    data = Tree(root, "mesh.yaml", shared=False).value()
    stages: dict[str, Callable[[], object]] = {
        "nodes to values": lambda: Tree(root, "mesh.yaml", shared=False).value(),
        "schema (pydantic)": lambda: MeshSpec.model_validate(data),
        "references": lambda: cross_checks(data, Path(".")),
        f"parse_mesh, all of it ({compose.LOADER.__name__})": lambda: parse_mesh(text, "m.yaml"),
    }
    for name, stage in stages.items():
        print(f"{name}: {median_ms(stage, args.runs):.1f} ms")


if __name__ == "__main__":
    main()
