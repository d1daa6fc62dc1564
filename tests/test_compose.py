"""docker-compose.yml runs the same mesh as `meshpilot up`: the file is valid for docker-compose,
and the sidecar bootstraps it uses are exactly what `meshpilot bootstrap` generates."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from meshpilot.mesh.load import load_mesh
from meshpilot.runner.envoy import envoy_binary

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BOOTSTRAPS = ROOT / "envoy-bootstrap"
DEMO = ROOT / "examples" / "demo" / "mesh.yaml"


@pytest.fixture(scope="session")
def docker_compose() -> str:
    """Debian's docker-compose (validates files without a Docker engine), installed if missing."""
    found = shutil.which("docker-compose")
    if found is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "docker-compose"],
            check=True,
            env=env,
            capture_output=True,
        )
        found = shutil.which("docker-compose")
    assert found, "docker-compose is not installed (apt-get install docker-compose)"
    return found


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_bootstraps", BOOTSTRAPS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


def test_docker_compose_accepts_the_file(docker_compose: str) -> None:
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_the_bootstraps_are_what_meshpilot_bootstrap_generates() -> None:
    expected = generator().bootstraps(compose())
    assert expected, "no sidecar found in docker-compose.yml"
    for name, text in expected.items():
        assert (BOOTSTRAPS / name).read_text() == text, (
            f"{name} is stale: run envoy-bootstrap/generate.py"
        )
    on_disk = {p.name for p in BOOTSTRAPS.glob("*.yaml")}
    assert on_disk == set(expected), "bootstraps that no compose sidecar uses"


def test_envoy_accepts_every_bootstrap() -> None:
    for path in sorted(BOOTSTRAPS.glob("*.yaml")):
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{path.name}: {result.stdout}{result.stderr}"


def test_compose_runs_the_instances_the_demo_mesh_runs_locally() -> None:
    spec = load_mesh(DEMO)
    local = sorted(
        (s, r.version)
        for s, service in spec.services.items()
        for r in service.run
        for _ in range(r.replicas)
    )
    apps = [
        s["environment"]
        for s in compose()["services"].values()
        if "MESH_SERVICE" in s.get("environment", {})
    ]
    assert sorted((a["MESH_SERVICE"], a["MESH_VERSION"]) for a in apps) == local
