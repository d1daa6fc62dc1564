"""The command line: exit codes and output formats from the contract, never a traceback."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from meshpilot.cli import main
from meshpilot.wording import counted
from tests.conftest import free_port
from tests.support.wait import wait_for

FIXTURE = Path(__file__).parent / "fixtures" / "valid-mesh.yaml"


def test_validate_a_good_file_prints_a_summary_and_exits_0() -> None:
    result = CliRunner().invoke(main, ["validate", str(FIXTURE)])
    assert result.exit_code == 0
    assert result.output.startswith(f"{FIXTURE}: valid: mesh 'demo', 3 services")


def test_validate_counts_one_service_and_one_route_in_the_singular(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("mesh: x\nservices:\n  web:\n    port: 80\n    routes: [{name: all}]\n")
    result = CliRunner().invoke(main, ["validate", str(mesh)])
    assert result.output == f"{mesh}: valid: mesh 'x', 1 service, 1 route\n"


@pytest.mark.parametrize(("count", "words"), [(0, "0 proxies"), (1, "1 proxy"), (2, "2 proxies")])
def test_counts_are_worded_in_the_singular_only_for_one(count: int, words: str) -> None:
    assert counted(count, "proxy", "proxies") == words
    assert counted(count, "route") == words.replace("proxies", "routes").replace("proxy", "route")


def test_validate_a_bad_file_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("mesh: x\nservices:\n  web:\n    prot: 80\n")
    result = CliRunner().invoke(main, ["validate", str(mesh)])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        f"{mesh}:3:3: services.web: missing required key 'port'",
        f"{mesh}:4:5: services.web.prot: unknown key 'prot'; did you mean 'port'?",
    ]


def test_validate_a_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "nope.yaml" in result.output


def test_render_prints_envoy_json_for_one_type() -> None:
    result = CliRunner().invoke(
        main, ["render", str(FIXTURE), "--service", "reviews", "--type", "cds"]
    )
    assert result.exit_code == 0
    rendered = json.loads(result.output)
    assert list(rendered) == ["cds"]
    assert {c["@type"] for c in rendered["cds"]} == {
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    }


def test_render_of_an_invalid_file_exits_1_with_the_problems(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("mesh: x\nservices: 3\n")
    result = CliRunner().invoke(main, ["render", str(mesh), "--service", "web"])
    assert result.exit_code == 1
    assert f"{mesh}:2:11: services:" in result.output
    assert "Traceback" not in result.output


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_render_of_an_undefined_service_names_the_services(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", str(FIXTURE), "--service", "nosuch"])
    assert one_line_error(result) == (
        "error: no service 'nosuch' in valid-mesh.yaml (services: frontend, ratings, reviews)"
    )


def test_render_of_an_undefined_version_names_the_versions(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(
        "mesh: x\nservices:\n  api:\n    port: 80\n    subsets: {one: {version: v1}}\n"
        "    endpoints: [{address: 127.0.0.1, port: 81, labels: {version: v3}}]\n"
        "    run: [{command: app, version: v2}, {command: app, labels: {version: v4}}]\n"
    )
    result = CliRunner().invoke(main, ["render", str(mesh), "--service", "api", "--version", "v9"])
    assert one_line_error(result) == (
        "error: service 'api' has no version 'v9' (versions: v1, v2, v3, v4)"
    )
    defined = ["render", str(mesh), "--service", "api", "--version", "v4", "--type", "cds"]
    assert CliRunner().invoke(main, defined).exit_code == 0


def test_status_without_a_control_plane_is_a_clean_error() -> None:
    result = CliRunner().invoke(main, ["status", "--admin", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "cannot reach the control plane admin API at 127.0.0.1:1" in result.output


def test_up_netns_without_root_is_a_clean_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    result = CliRunner().invoke(main, ["up", "--netns", str(FIXTURE)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "--netns needs root" in result.output


def test_an_insecure_control_plane_makes_no_ca(tmp_path: Path) -> None:
    """Plaintext xDS signs nothing: no CA in the default state directory."""
    admin = f"127.0.0.1:{free_port()}"
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    argv = [sys.executable, "-m", "meshpilot", "serve", str(FIXTURE), "--insecure"]
    argv += ["--xds", f"127.0.0.1:{free_port()}", "--admin", admin]
    with subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL) as serve:
        try:
            wait_for(
                lambda: urllib.request.urlopen(f"http://{admin}/healthz", timeout=1).status == 200,
                timeout=30,
                ignore=(OSError,),
            )
        finally:
            serve.terminate()
    assert not (tmp_path / "state").exists()


def test_version_prints_the_installed_package_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"meshpilot {importlib.metadata.version('meshpilot')}\n"


def test_serve_with_a_bad_store_url_is_one_clean_line() -> None:
    result = CliRunner().invoke(main, ["serve", str(FIXTURE), "--store", "http://127.0.0.1:2379"])
    assert result.exit_code == 1
    assert result.output == (
        "error: --store 'http://127.0.0.1:2379': expected etcd://127.0.0.1:2379,127.0.0.2:2379\n"
    )


def test_up_with_replicas_and_netns_is_one_clean_line() -> None:
    result = CliRunner().invoke(main, ["up", str(FIXTURE), "--replicas", "2", "--netns"])
    assert result.exit_code == 1
    assert result.output == "error: --replicas and --netns cannot be used together yet\n"
