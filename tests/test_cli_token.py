"""`meshpilot token`: prints a join token the control plane's authority accepts; revokes one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from meshpilot.cli import main
from meshpilot.identity.authority import open_token_authority
from meshpilot.identity.ca import ROOT_CERT, ROOT_KEY, CertificateAuthority
from meshpilot.identity.errors import TokenRevoked
from meshpilot.identity.tokens import read_token


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["token", *args], env=env)


@pytest.fixture
def mesh(tmp_path: Path) -> Path:
    path = tmp_path / "mesh.yaml"
    path.write_text("mesh: demo\nservices: {reviews: {port: 9080}}\n")
    return path


def test_token_for_a_mesh_verifies(mesh: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    options = ["--label", "version=v2", "--state-dir", str(state), "--mesh", str(mesh)]
    result = run("--service", "reviews", *options, "--ttl", "2h")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert result.output == token + "\n"
    grant = open_token_authority(state).verify(token)
    assert (grant.mesh, grant.service, dict(grant.labels)) == ("demo", "reviews", {"version": "v2"})
    assert abs(grant.expires_at - grant.issued_at - dt.timedelta(hours=2)) < dt.timedelta(seconds=1)
    ca = CertificateAuthority.open(state, "demo")
    assert grant.ca_fingerprint == ca.fingerprint


def test_later_tokens_need_no_mesh_file(mesh: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    assert run("--service", "reviews", "--state-dir", state, "--mesh", str(mesh)).exit_code == 0
    result = run("--service", "ratings", "--state-dir", state)
    assert result.exit_code == 0, result.output
    grant = open_token_authority(Path(state)).verify(result.output)
    assert (grant.mesh, grant.service) == ("demo", "ratings")


def test_default_ttl_is_30_days(mesh: Path, tmp_path: Path) -> None:
    result = run("--service", "a", "--state-dir", str(tmp_path / "s"), "--mesh", str(mesh))
    grant = read_token(result.output)
    assert grant.expires_at - grant.issued_at == dt.timedelta(days=30)


def test_default_state_dir_follows_xdg(mesh: Path, tmp_path: Path) -> None:
    result = run("--service", "a", "--mesh", str(mesh), env={"XDG_STATE_HOME": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "meshpilot" / ROOT_KEY).is_file()
    open_token_authority(tmp_path / "meshpilot").verify(result.output)


def test_plugged_in_ca_is_what_the_token_pins(mesh: Path, tmp_path: Path) -> None:
    corp = CertificateAuthority.open(tmp_path / "corp", "corp")
    mesh.write_text(
        f"mesh: demo\nsecurity:\n  ca: {{cert: corp/{ROOT_CERT}, key: corp/{ROOT_KEY}}}\n"
    )
    state = tmp_path / "state"
    result = run("--service", "a", "--state-dir", str(state), "--mesh", str(mesh))
    assert result.exit_code == 0, result.output
    assert read_token(result.output).ca_fingerprint == corp.fingerprint
    assert not (state / ROOT_KEY).exists()


def test_revoke(mesh: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    token = run("--service", "reviews", "--state-dir", state, "--mesh", str(mesh)).output
    token_id = read_token(token).token_id
    result = run("--revoke", token_id, "--state-dir", state)
    assert result.exit_code == 0, result.output
    assert result.output == f"revoked {token_id}\n"
    with pytest.raises(TokenRevoked):
        open_token_authority(Path(state)).verify(token)


def test_no_mesh_known_is_a_clean_error(tmp_path: Path) -> None:
    result = run("--service", "reviews", "--state-dir", str(tmp_path))
    assert result.exit_code == 1
    assert "no mesh has used the state directory" in result.output
    assert "--mesh" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--ttl", "2"], 2, "has no unit"),
        (["--ttl", "1d"], 2, "unknown unit 'd'"),
        (["--ttl", "0s"], 1, "must be positive"),
        (["--label", "version"], 1, "expected K=V"),
    ],
)
def test_bad_options(mesh: Path, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = run("--service", "reviews", "--state-dir", str(tmp_path), "--mesh", str(mesh), *args)
    assert result.exit_code == code
    assert message in result.output
    assert "Traceback" not in result.output


def test_service_is_required(tmp_path: Path) -> None:
    result = run("--state-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "--service" in result.output


def test_invalid_mesh_file_shows_its_problems(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("mesh: demo\nsecurity: {mtls: strik}\n")
    result = run("--service", "a", "--state-dir", str(tmp_path), "--mesh", str(mesh))
    assert result.exit_code == 1
    assert f"{mesh}:2:18: security.mtls:" in result.output


def token_file(tmp_path: Path, mesh: Path, service: str) -> Path:
    result = run("--service", service, "--state-dir", str(tmp_path / "s"), "--mesh", str(mesh))
    path = tmp_path / f"{service}.token"
    path.write_text(result.output)
    return path


@pytest.mark.parametrize("command", ["bootstrap", "sidecar"])
def test_token_file_for_another_service_is_refused(
    mesh: Path, tmp_path: Path, command: str
) -> None:
    path = token_file(tmp_path, mesh, "reviews")
    result = CliRunner().invoke(main, [command, "--service", "ratings", "--token-file", str(path)])
    assert result.exit_code == 1
    assert "for service 'reviews', not 'ratings'" in result.stderr


def test_bootstrap_with_a_token_needs_the_control_plane_and_a_token(
    mesh: Path, tmp_path: Path
) -> None:
    """The secure bootstrap holds the CA the token pins, read from the control plane itself."""
    path = token_file(tmp_path, mesh, "reviews")
    nowhere = ["--xds", "127.0.0.1:1"]
    result = CliRunner().invoke(
        main, ["bootstrap", "--service", "reviews", "--token-file", str(path), *nowhere]
    )
    assert result.exit_code == 1
    assert "cannot reach the control plane at 127.0.0.1:1" in result.stderr

    path.write_text("mpt1.garbage\n")
    result = CliRunner().invoke(
        main, ["bootstrap", "--service", "reviews", "--token-file", str(path)]
    )
    assert result.exit_code == 1
    assert "not a meshpilot join token" in result.stderr


def test_bootstrap_output_is_private_even_over_an_existing_file(tmp_path: Path) -> None:
    """A bootstrap may hold a token: a world-readable file it overwrites becomes 0600."""
    output = tmp_path / "envoy.yaml"
    output.write_text("old\n")
    output.chmod(0o644)
    result = CliRunner().invoke(main, ["bootstrap", "--service", "reviews", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert output.stat().st_mode & 0o777 == 0o600
    assert "reviews" in output.read_text()
