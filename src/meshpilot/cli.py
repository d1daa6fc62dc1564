"""The `meshpilot` command line. Thin: parse options, call the library, print the result."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from meshpilot.errors import MeshpilotError

F = TypeVar("F", bound=Callable[..., Any])


def _address(flag: str, default: str) -> Callable[[F], F]:
    """A HOST:PORT option with its default shown in --help."""
    return click.option(flag, default=default, show_default=True, metavar="HOST:PORT")


def _sidecar_options(func: F) -> F:
    options = [
        click.option("--service", required=True, help="Service this instance belongs to."),
        click.option("--version", "version_", default=None, help="Value of the `version` label."),
        click.option("--label", "labels", multiple=True, metavar="K=V", help="Extra label."),
        click.option("--ip", default="127.0.0.1", show_default=True, help="Instance IP."),
        click.option(
            "--local-ip",
            default=None,
            help="The app's IP inside the instance's own network namespace (e.g. 127.0.0.1): "
            "admin, outbound port and the app there, only the inbound port on --ip.",
        ),
        click.option("--app-port", default=8080, show_default=True, type=int),
        click.option(
            "--xds",
            default="127.0.0.1:18000",
            show_default=True,
            metavar="HOST:PORT[,HOST:PORT...]",
            help="The control plane; with replicas, every one of them (the sidecar reconnects "
            "to another when its replica goes away).",
        ),
        click.option(
            "--xds-protocol",
            type=click.Choice(["delta", "sotw"]),
            default="delta",
            show_default=True,
            help="Incremental xDS (only what changed is sent) or state of the world.",
        ),
        click.option(
            "--locality",
            default=None,
            metavar="REGION[/ZONE[/SUBZONE]]",
            help="Where the instance runs (e.g. eu-west/a): its calls prefer members nearby, "
            "and callers see it in this locality.",
        ),
        click.option(
            "--gateway",
            is_flag=True,
            help="Be the mesh's gateway named --service (under `gateways:`): it listens where "
            "the mesh says and has no app (--app-port is not used).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_token_file_option = click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The instance's join token (`meshpilot token`): TLS to the control plane, a workload "
    "certificate and mTLS. Without it, plaintext for a control plane run with --insecure.",
)


_state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The control plane's state directory (CA and token keys). Default: "
    "$XDG_STATE_HOME/meshpilot, else ~/.local/state/meshpilot.",
)

_admin_token_option = click.option(
    "--admin-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A file holding the admin API's bearer token (every path but /healthz needs it).",
)


def _admin_token(path: Path | None) -> str | None:
    from meshpilot.identity.state import read_file

    if path is None:
        return None
    token = read_file(path, secret=True).decode("utf-8", "replace").strip()
    if not token:
        raise click.UsageError(f"--admin-token-file {path} is empty")
    return token


_mixer_metrics_option = click.option(
    "--mixer",
    "mixer_",
    default="127.0.0.1:18082",
    show_default=True,
    metavar="HOST:PORT",
    help="The mixer's HTTP address (`mixer --metrics`), optionally as http://HOST:PORT.",
)


class _Group(click.Group):
    """Prints MeshpilotErrors as one clean message instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeshpilotError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(
    package_name="meshpilot", prog_name="meshpilot", message="%(prog)s %(version)s"
)
def main() -> None:
    """meshpilot: a service-mesh control plane driving real Envoy sidecars."""


def _exit_invalid(problems: list[Any]) -> NoReturn:
    """Print every problem as `validate` does, and exit 1."""
    for problem in problems:
        click.echo(problem.format())
    sys.exit(1)


@main.command()
@click.argument("mesh", type=click.Path(path_type=Path))
def validate(mesh: Path) -> None:
    """Validate a mesh file: exit 0 with a summary, or 1 with every problem."""
    from meshpilot.mesh.diagnostics import MeshInvalid
    from meshpilot.mesh.load import load_mesh
    from meshpilot.wording import counted

    try:
        spec = load_mesh(mesh)
    except MeshInvalid as invalid:
        _exit_invalid(invalid.problems)
    routes = sum(len(s.routes) for s in spec.services.values())
    click.echo(
        f"{mesh}: valid: mesh {spec.mesh!r}, {counted(len(spec.services), 'service')}, "
        f"{counted(routes, 'route')}"
    )


@main.command()
@click.argument("mesh", type=click.Path(path_type=Path))
@click.option("--service", required=True)
@click.option("--version", "version_", default=None)
@click.option(
    "--type", "type_", default="all", type=click.Choice(["lds", "cds", "rds", "eds", "all"])
)
@click.option(
    "--insecure", is_flag=True, help="As `serve --insecure` sends them: plaintext, no identity."
)
@click.option(
    "--locality",
    default=None,
    metavar="REGION[/ZONE[/SUBZONE]]",
    help="As a sidecar started with this --locality gets them (endpoint priorities, weights).",
)
def render(
    mesh: Path, service: str, version_: str | None, type_: str, insecure: bool, locality: str | None
) -> None:
    """Print the xDS resources a sidecar of SERVICE would receive, as Envoy JSON."""
    from meshpilot.bootstrap import locality_option
    from meshpilot.render import render_resources

    resources = render_resources(
        mesh, service, version_, type_, secure=not insecure, locality=locality_option(locality)
    )
    click.echo(json.dumps(resources, indent=2))


@main.command()
@click.argument("mesh", type=click.Path(path_type=Path), required=False)
@_address("--xds", "127.0.0.1:18000")
@_address("--admin", "127.0.0.1:18001")
@click.option(
    "--mixer",
    "mixer_address",
    default=None,
    metavar="HOST:PORT",
    help="Tell sidecars to reach the mixer here, whatever the mesh file's mixer.address says.",
)
@click.option(
    "--mixer-metrics",
    default="127.0.0.1:18082",
    show_default=True,
    metavar="HOST:PORT",
    help="The mixer's HTTP address (`mixer --metrics`), where the web console (/ui) gets its "
    "service graph's figures.",
)
@_state_dir_option
@click.option(
    "--insecure",
    is_flag=True,
    help="Plaintext xDS, no join tokens, no workload certificates, no mTLS (development only).",
)
@_admin_token_option
@click.option(
    "--peer-max-streams",
    type=click.IntRange(min=0),
    default=128,
    show_default=True,
    help="ADS streams one peer address may hold open at once (0: no limit).",
)
@click.option(
    "--peer-stream-rate",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="New ADS streams per second one peer address may open (0: no limit).",
)
@click.option(
    "--store",
    default=None,
    metavar="etcd://HOST:PORT[,HOST:PORT...]",
    help="Run as one of several replicas: the registry of instances lives in this etcd, and "
    "every replica serves every instance. Default: this process's memory (one control plane).",
)
def serve(
    mesh: Path | None,
    xds: str,
    admin: str,
    mixer_address: str | None,
    mixer_metrics: str,
    state_dir: Path | None,
    insecure: bool,
    admin_token_file: Path | None,
    peer_max_streams: int,
    peer_stream_rate: float,
    store: str | None,
) -> None:
    """Run the control plane: ADS gRPC server, certificate service and admin HTTP API, watching
    MESH. Secure by default: TLS on the xDS port, sidecars join with tokens, mTLS between them.
    With --store, it serves the mesh history's current version; MESH, if given, is watched and
    each valid save published as a new version."""
    from meshpilot.admin.client import http_address
    from meshpilot.admin.graph import MIXER_METRICS
    from meshpilot.controlplane import ControlPlane, run_control_plane
    from meshpilot.identity.state import default_state_dir
    from meshpilot.store import open_store
    from meshpilot.xds.peers import PeerLimits

    # Insecure: no CA, no certificate service (nothing is signed over plaintext).
    state_dir = None if insecure else state_dir or default_state_dir()
    token = _admin_token(admin_token_file)

    peers = PeerLimits(peer_max_streams, peer_stream_rate)
    plane = ControlPlane(
        mesh,
        xds,
        admin,
        mixer_address,
        state_dir,
        not insecure,
        token,
        peer_limits=peers,
        mixer_metrics=http_address(mixer_metrics, MIXER_METRICS),
        store=open_store(store),
    )
    run_control_plane(plane)


_store_option = click.option(
    "--store",
    required=True,
    envvar="MESHPILOT_STORE",
    metavar="etcd://HOST:PORT[,HOST:PORT...]",
    help="The store holding the mesh history (default: $MESHPILOT_STORE).",
)
_author_option = click.option(
    "--author", default=None, help="Who stores the version, for the history (default: user@host)."
)


@main.command()
@click.argument("mesh", type=click.Path(path_type=Path))
@_store_option
@_author_option
def apply(mesh: Path, store: str, author: str | None) -> None:
    """Validate MESH as `validate` does and store it as the mesh history's next version, which
    every replica (`serve --store`) then serves; nothing is stored when it is not valid."""
    from meshpilot.mesh.diagnostics import MeshInvalid
    from meshpilot.store.history import apply_mesh, version_line

    try:
        click.echo(version_line(*apply_mesh(mesh, store, author)))
    except MeshInvalid as invalid:
        _exit_invalid(invalid.problems)


@main.command()
@_store_option
def history(store: str) -> None:
    """List the stored mesh versions: number, when, who, content hash, which one is current."""
    from meshpilot.store.history import print_history

    print_history(store)


@main.command()
@click.argument("version", type=click.IntRange(min=1))
@_store_option
@_author_option
def rollback(version: int, store: str, author: str | None) -> None:
    """Make stored VERSION current again, as a new version "rollback to VERSION"."""
    from meshpilot.store.history import rollback_mesh, version_line

    click.echo(version_line(*rollback_mesh(version, store, author)))


@main.command()
@_sidecar_options
@_token_file_option
@click.option("-o", "output", type=click.Path(path_type=Path), default=None)
@click.option(
    "--sds-socket",
    default="/run/meshpilot/sds.sock",
    show_default=True,
    help="With --token-file: where the instance's agent serves SDS (the workload certificate).",
)
@click.option(
    "--proxyless",
    is_flag=True,
    help="Write gRPC's xDS bootstrap (JSON, for $GRPC_XDS_BOOTSTRAP) for a proxyless gRPC "
    "client instead: it calls services as xds:///SERVICE:PORT with no sidecar (serve --insecure).",
)
def bootstrap(
    output: Path | None, token_file: Path | None, sds_socket: str, proxyless: bool, **opts: Any
) -> None:
    """Write an Envoy bootstrap (YAML) for one sidecar instance, or with --proxyless gRPC's
    xDS bootstrap (JSON) for a proxyless gRPC client."""
    from meshpilot.bootstrap import ControlChannel, render_bootstrap, sidecar_identity
    from meshpilot.grpc_bootstrap import render_grpc_bootstrap
    from meshpilot.identity.client import read_token_file
    from meshpilot.identity.tls import pinned_anchor
    from meshpilot.identity.tokens import read_token

    identity = sidecar_identity(**opts)
    if proxyless and opts["gateway"]:
        raise click.UsageError("--proxyless and --gateway: a gateway is an Envoy")
    if proxyless and token_file is not None:
        raise click.UsageError("--proxyless clients join a control plane run with --insecure")
    if proxyless:
        _write(output, render_grpc_bootstrap(identity))
        return
    channel = None
    if token_file is not None:
        token = read_token_file(token_file, identity.service)
        ca_pem = pinned_anchor(identity.first_xds, read_token(token).ca_fingerprint).decode()
        channel = ControlChannel(ca_pem, token, sds_socket)
    _write(output, render_bootstrap(identity, channel))


def _write(output: Path | None, text: str) -> None:
    """To stdout, or to a file only its owner reads (a bootstrap may hold a token)."""
    if output is None:
        click.echo(text, nl=False)
    else:
        output.touch(mode=0o600)
        output.chmod(0o600)  # touch() keeps an existing file's mode
        output.write_text(text)


@main.command()
@_sidecar_options
@_token_file_option
def sidecar(token_file: Path | None, **opts: Any) -> None:
    """Run a real Envoy as the sidecar of one instance, in the foreground; with a join token,
    also its agent (workload certificate over SDS, renewed)."""
    # Envoy is forked while gRPC threads run: gRPC's fork handlers could abort the child.
    # Read when gRPC is first imported, so set first.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from meshpilot.bootstrap import sidecar_identity
    from meshpilot.identity.client import read_token_file
    from meshpilot.runner.envoy import run_sidecar

    identity = sidecar_identity(**opts)
    if token_file is None:
        sys.exit(run_sidecar(identity))
    token = read_token_file(token_file, identity.service)
    from meshpilot.runner.secure_sidecar import run_secure_sidecar

    sys.exit(run_secure_sidecar(identity, token))


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> dt.timedelta:
    from meshpilot.mesh.durations import DurationError, parse_duration

    try:
        milliseconds = parse_duration(value)
    except DurationError as err:
        raise click.BadParameter(str(err)) from None
    return dt.timedelta(milliseconds=milliseconds)


@main.command()
@click.option("--service", default=None, help="The service the token lets a sidecar join as.")
@click.option("--label", "labels", multiple=True, metavar="K=V", help="A label it may claim.")
@click.option(
    "--ttl", default="720h", show_default=True, callback=_duration, metavar="D", help="Lifetime."
)
@_state_dir_option
@click.option(
    "--mesh",
    "mesh_file",
    type=click.Path(path_type=Path),
    default=None,
    help="The mesh file; default: the mesh last served with this state directory.",
)
@click.option("--revoke", metavar="TOKEN_ID", default=None, help="Revoke a token by its id.")
@click.option(
    "--store",
    default=None,
    metavar="etcd://HOST:PORT[,HOST:PORT...]",
    help="Issue (or --revoke) the token with the token key the replicas (`serve --store`) share "
    "in this store.",
)
@click.option(
    "--any-address",
    is_flag=True,
    help="Let the sidecar register an endpoint address other than its connection's source "
    "(behind NAT or a proxy).",
)
def token(
    service: str | None,
    labels: tuple[str, ...],
    ttl: dt.timedelta,
    state_dir: Path | None,
    mesh_file: Path | None,
    revoke: str | None,
    store: str | None,
    any_address: bool,
) -> None:
    """Print a join token for a sidecar of SERVICE (or revoke one with --revoke)."""
    from meshpilot.bootstrap import parse_labels
    from meshpilot.identity.authority import token_authority
    from meshpilot.identity.state import default_state_dir

    state_dir = state_dir or default_state_dir()
    if revoke is not None:
        _revoke(revoke, state_dir, store)
        click.echo(f"revoked {revoke}")
        return
    if service is None:
        raise click.UsageError("give --service NAME (or --revoke TOKEN_ID)")
    if store is None:
        authority = token_authority(state_dir, mesh_file)
    else:
        from meshpilot.identity.shared import store_token_authority

        authority = store_token_authority(store, state_dir, mesh_file)
    click.echo(authority.issue(service, parse_labels(labels), ttl, any_address=any_address))


def _revoke(token_id: str, state_dir: Path, store: str | None) -> None:
    """In the state directory, or with `store` for every replica on it."""
    if store is None:
        from meshpilot.identity.tokens import revoke_token

        revoke_token(state_dir, token_id)
    else:
        from meshpilot.identity.shared import store_revoke

        store_revoke(store, token_id)


@main.command()
@_address("--admin", "127.0.0.1:18001")
@_admin_token_option
def status(admin: str, admin_token_file: Path | None) -> None:
    """Show connected proxies and their sync state per resource type."""
    from meshpilot.admin.status import print_status

    sys.exit(print_status(admin, _admin_token(admin_token_file)))


_envoy_admin_option = click.option(
    "--envoy-admin",
    default=None,
    metavar="HOST:PORT",
    help="The sidecar's Envoy admin; default: the proxy's IP (from /proxies), port 15000.",
)


@main.command("proxy-config")
@click.argument("node")
@click.option(
    "--type",
    "type_",
    default="all",
    show_default=True,
    type=click.Choice(
        ["cluster", "listener", "route", "scoped-route", "endpoint", "secret", "all"]
    ),
)
@click.option(
    "--from",
    "source",
    default="control-plane",
    show_default=True,
    type=click.Choice(["control-plane", "sidecar"]),
    help="What the control plane sent the proxy, or what its Envoy has in force.",
)
@click.option(
    "-o", "--output", default="table", show_default=True, type=click.Choice(["table", "json"])
)
@_address("--admin", "127.0.0.1:18001")
@_admin_token_option
@_envoy_admin_option
def proxy_config(
    node: str,
    type_: str,
    source: str,
    output: str,
    admin: str,
    admin_token_file: Path | None,
    envoy_admin: str | None,
) -> None:
    """Show the configuration of proxy NODE (node id or IP, as `status` lists them)."""
    from meshpilot.admin.proxy_config import print_proxy_config
    from meshpilot.admin.proxy_dump import ConfigAccess

    access = ConfigAccess(admin, _admin_token(admin_token_file), envoy_admin)
    print_proxy_config(node, type_, source, output, access)


@main.command("diff")
@click.argument("node")
@_address("--admin", "127.0.0.1:18001")
@_admin_token_option
@_envoy_admin_option
def diff(node: str, admin: str, admin_token_file: Path | None, envoy_admin: str | None) -> None:
    """Compare what the control plane sent proxy NODE with what its Envoy has; exit 1 when
    they differ."""
    from meshpilot.admin.config_diff import print_diff
    from meshpilot.admin.proxy_dump import ConfigAccess

    sys.exit(print_diff(node, ConfigAccess(admin, _admin_token(admin_token_file), envoy_admin)))


@main.command()
@click.argument("mesh", type=click.Path(path_type=Path))
@_address("--listen", "127.0.0.1:18081")
@_address("--metrics", "127.0.0.1:18082")
@click.option(
    "--workers",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Worker processes sharing the gRPC port.",
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The mixer's join token (`meshpilot token --service meshpilot-mixer`): its certificate "
    "for mTLS with the sidecars.",
)
@_address("--xds", "127.0.0.1:18000")
@click.option("--insecure", is_flag=True, help="Plaintext gRPC, no caller identity (development).")
def mixer(
    mesh: Path,
    listen: str,
    metrics: str,
    workers: int,
    token_file: Path | None,
    xds: str,
    insecure: bool,
) -> None:
    """Run the policy & telemetry service (ext_authz, global rate limits, access logs,
    Prometheus metrics)."""
    # Workers start hook processes while gRPC threads run: gRPC's fork handlers could abort them.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    from meshpilot.identity.client import read_token_file
    from meshpilot.mixer import MixerIdentity, run_mixer
    from meshpilot.model.names import MIXER_SERVICE

    if token_file is not None and insecure:
        raise click.UsageError("--token-file and --insecure contradict each other")
    if token_file is None and not insecure:
        raise click.UsageError("give --token-file (mTLS with the sidecars), or --insecure")
    identity = None
    if token_file is not None:
        identity = MixerIdentity(read_token_file(token_file, MIXER_SERVICE), xds)
    run_mixer(mesh, listen, metrics, workers, identity)


@main.command()
@_mixer_metrics_option
@click.option("--service", default=None, help="Only requests from or to this service.")
@click.option("--status", default=None, type=int, help="Only responses with this status code.")
@click.option("--path", default=None, help="Only requests whose path contains this.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--follow", "-f", is_flag=True, help="Then print new requests as they arrive, until Ctrl-C."
)
def logs(
    mixer_: str,
    service: str | None,
    status: int | None,
    path: str | None,
    limit: int,
    follow: bool,
) -> None:
    """Show recent requests through the mesh, from the mixer's access-log store."""
    from meshpilot.telemetry.cli import follow_logs, print_logs

    (follow_logs if follow else print_logs)(mixer_, service, status, path, limit)


@main.command()
@_mixer_metrics_option
@click.option("--window", default=60.0, show_default=True, help="Seconds to look back.")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    is_flag=False,
    flag_value=2.0,
    default=None,
    metavar="[SECONDS]",
    help="Refresh the table in place every SECONDS (2 when not given), until Ctrl-C.",
)
def top(mixer_: str, window: float, watch: float | None) -> None:
    """Per caller -> callee: request rate, 4xx and 5xx rates, p50 and p99 latency."""
    from meshpilot.telemetry.cli import print_top, watch_top

    if watch is None:
        print_top(mixer_, window)
    else:
        watch_top(mixer_, window, watch)


@main.command()
@click.argument("mesh", type=click.Path(path_type=Path))
@click.option(
    "--xds",
    default=None,
    metavar="HOST:PORT",
    help="Default: the first free 127.200.*.1 (127.200.0.1 alone), :18000.",
)
@click.option("--admin", default=None, metavar="HOST:PORT", help="Default: same IP, :18001.")
@click.option("--listen", default=None, metavar="HOST:PORT", help="Mixer gRPC; default :18081.")
@click.option("--metrics", default=None, metavar="HOST:PORT", help="Mixer HTTP; default :18082.")
@click.option(
    "--netns",
    is_flag=True,
    help="As root: each replica in its own network namespace, where only its sidecar's mTLS "
    "inbound port faces the others; xDS and the mixer then listen on the host's bridge IP.",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Control planes to run: more than one run on a local etcd (`serve --store`), each on "
    "its own IP (:18000, :18001), and every sidecar lists them all.",
)
def up(
    mesh: Path,
    xds: str | None,
    admin: str | None,
    listen: str | None,
    metrics: str | None,
    netns: bool,
    replicas: int,
) -> None:
    """Run a whole mesh locally: control plane, mixer, and every `run:` replica with a sidecar."""
    from meshpilot.runner.up import run_up

    sys.exit(run_up(mesh, xds, admin, listen, metrics, netns, replicas))
