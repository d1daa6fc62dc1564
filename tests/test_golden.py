"""Golden files per stage: tests/golden/<case>/mesh.yaml -> ir.yaml and <service>.json.

Run `make golden` (pytest --update-golden) to rewrite them after an intended change, then review
the diff: it is the exact change in what Envoy receives.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from meshpilot.mesh.load import load_mesh
from meshpilot.render import render_resources
from meshpilot.translator.build import build_ir

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "mesh.yaml").exists())


def check_golden(path: Path, actual: str, update: bool) -> None:
    if update:
        path.write_text(actual)
    assert path.exists(), f"{path} missing: run `make golden`"
    assert actual == path.read_text(), f"{path} differs: run `make golden` and review the diff"


@pytest.mark.parametrize("case", CASES)
def test_ir(case: str, update_golden: bool) -> None:
    mesh = build_ir(load_mesh(GOLDEN / case / "mesh.yaml"), GOLDEN / case)
    # Hook and CA paths are absolute in the IR: keep the checkout's location out of the file.
    actual = yaml.safe_dump(dataclasses.asdict(mesh), sort_keys=False).replace(
        str(GOLDEN.resolve()), "<golden>"
    )
    check_golden(GOLDEN / case / "ir.yaml", actual, update_golden)


@pytest.mark.parametrize("case", CASES)
def test_resources(case: str, update_golden: bool) -> None:
    mesh_path = GOLDEN / case / "mesh.yaml"
    spec = load_mesh(mesh_path)
    for service in [*spec.services, *spec.gateways]:
        rendered = render_resources(mesh_path, service, None, "all")
        actual = json.dumps(rendered, indent=2, sort_keys=True) + "\n"
        check_golden(GOLDEN / case / f"{service}.json", actual, update_golden)
