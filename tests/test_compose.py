"""docker-compose.yml runs the demo mesh secure by default: the file is valid for docker-compose,
nothing listens on a wildcard address or is published on the host (but Grafana, on its loopback),
the trace collector the demo mesh names is a service of the file on the mesh network, every
instance of the demo mesh is one app plus one sidecar holding its own join token (in a volume of
its own that only the `tokens` service also mounts: no sidecar can read another instance's
token), and the `tokens` service's command lines issue tokens that the control plane's state
directory verifies. Prometheus scrapes from the control plane's network namespace, and neither it
nor Grafana is reachable from the mesh workloads' network.

The checks are one function, `problems()`, run on the file and on broken copies of it (each
check is shown to fail on a copy that breaks what it guards)."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from meshpilot.bootstrap import SidecarIdentity, parse_labels, sidecar_identity
from meshpilot.cli import main
from meshpilot.identity.authority import open_mesh_identity
from meshpilot.identity.client import read_token_file
from meshpilot.mesh.load import load_mesh
from meshpilot.model.names import MIXER_SERVICE
from tests.support.dashboards import PROMETHEUS_CONFIG, PROVISIONING

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DEMO = ROOT / "examples" / "demo" / "mesh.yaml"
LOCAL_IP = "127.0.0.1"
DATASOURCES = PROVISIONING / "datasources" / "prometheus.yml"
TOKENS_SERVICE = "tokens"
PROMETHEUS, GRAFANA = "prometheus", "grafana"

Doc = dict[str, Any]


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


def test_docker_compose_accepts_the_file(docker_compose: str) -> None:
    result = subprocess.run(
        [docker_compose, "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# What the file says, read with meshpilot's own command-line parser.


def argv(service: Doc) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(w) for w in command]


def params(command: str, words: list[str]) -> dict[str, Any]:
    """`meshpilot COMMAND WORDS...` parsed by meshpilot's CLI: an unknown option raises."""
    with main.commands[command].make_context(command, list(words)) as ctx:
        return dict(ctx.params)


def host(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def mesh_ip(service: Doc) -> str | None:
    return (service.get("networks") or {}).get("mesh", {}).get("ipv4_address")  # type: ignore[no-any-return]


def mounts(service: Doc) -> dict[str, tuple[str, bool]]:
    """Mount target -> (source, read-only) from short-form `volumes:`."""
    found = {}
    for spec in service.get("volumes", []):
        source, target, *mode = str(spec).split(":")
        found[target] = (source, mode == ["ro"])
    return found


def after_tokens(service: Doc) -> bool:
    depends = service.get("depends_on") or {}
    return isinstance(depends, dict) and depends.get(TOKENS_SERVICE) == {
        "condition": "service_completed_successfully"
    }


@dataclass(frozen=True)
class Token:
    service: str
    labels: dict[str, str]
    state_dir: Path | None
    mesh: Path | None
    file: str


def token_script(doc: Doc) -> str:
    words = argv(doc["services"].get(TOKENS_SERVICE, {}))
    assert words[:2] == ["sh", "-c"] and len(words) == 3, "the tokens service is not `sh -c SCRIPT`"
    return words[2]


def tokens_issued(script: str) -> list[Token]:
    """Each `meshpilot token ... > FILE` line of the tokens service's script."""
    issued = []
    for line in script.splitlines():
        words = shlex.split(line)
        if words[:2] != ["meshpilot", "token"]:
            continue
        assert len(words) > 4 and words[-2] == ">", f"not `meshpilot token ... > FILE`: {line}"
        got = params("token", words[2:-2])
        labels = parse_labels(got["labels"])
        issued.append(Token(got["service"], labels, got["state_dir"], got["mesh_file"], words[-1]))
    return issued


@dataclass(frozen=True)
class Sidecar:
    name: str
    identity: SidecarIdentity
    token_file: str | None
    xds: str


def problems(text: str) -> list[str]:
    """Everything docker-compose.yml `text` gets wrong about the secure demo mesh."""
    found: list[str] = []
    if "0.0.0.0" in text or "[::]" in text:
        found.append("a wildcard address (0.0.0.0 or [::])")
    doc: Doc = yaml.safe_load(text)
    services: dict[str, Doc] = doc["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            if name != GRAFANA or not str(port).startswith(f"{LOCAL_IP}:"):
                found.append(f"{name}: publishes ports {port} (only Grafana, on {LOCAL_IP})")
        if service.get("network_mode") == "host":
            found.append(f"{name}: network_mode host")

    def running(command: str) -> dict[str, Doc]:
        return {n: s for n, s in services.items() if argv(s)[:2] == ["meshpilot", command]}

    def parsed(name: str, command: str) -> dict[str, Any] | None:
        try:
            return params(command, argv(services[name])[2:])
        except click.ClickException as err:
            found.append(f"{name}: meshpilot {command}: {err.format_message()}")
            return None

    # The control plane: xDS on its mesh IP, admin on loopback, CA in a state directory.
    planes = running("serve")
    if len(planes) != 1:
        return [*found, f"{len(planes)} control planes"]
    (cp_name,) = planes
    cp = parsed(cp_name, "serve")
    if cp is None:
        return found
    if host(cp["admin"]) != LOCAL_IP:
        found.append(f"{cp_name}: --admin {cp['admin']} is not on {LOCAL_IP}")
    if host(cp["xds"]) != mesh_ip(services[cp_name]):
        found.append(f"{cp_name}: --xds {cp['xds']} is not on its mesh IP")
    if cp["insecure"]:
        found.append(f"{cp_name}: --insecure")
    if cp["state_dir"] is None:
        found.append(f"{cp_name}: no --state-dir")
    cp_state = mounts(services[cp_name]).get(str(cp["state_dir"]))

    # The mixer: a workload with a token, listening on its mesh IP only.
    mixers = running("mixer")
    mixer = None
    if len(mixers) != 1:
        found.append(f"{len(mixers)} mixers")
    else:
        (mixer_name,) = mixers
        mixer = parsed(mixer_name, "mixer")
    if mixer is not None:
        ip = mesh_ip(services[mixer_name])
        for option in ("listen", "metrics"):
            if host(mixer[option]) != ip:
                found.append(f"{mixer_name}: --{option} {mixer[option]} is not on its mesh IP")
        if mixer["token_file"] is None:
            found.append(f"{mixer_name}: no --token-file")
        if mixer["xds"] != cp["xds"]:
            found.append(f"{mixer_name}: --xds {mixer['xds']} is not the control plane's")
        if cp["mixer_address"] != mixer["listen"]:
            found.append(f"{cp_name}: --mixer {cp['mixer_address']} is not where the mixer is")

    # Apps: on loopback inside their own network namespace, holding no secrets.
    apps = {n: s for n, s in services.items() if "MESH_SERVICE" in (s.get("environment") or {})}
    for name, app in apps.items():
        env = app["environment"]
        if env.get("MESH_BIND_IP") != LOCAL_IP:
            found.append(f"{name}: MESH_BIND_IP is not {LOCAL_IP}")
        if env.get("MESH_IP") != mesh_ip(app) or mesh_ip(app) is None:
            found.append(f"{name}: MESH_IP is not its mesh IP")
        if app.get("volumes"):
            found.append(f"{name}: an app mounts volumes")

    # Sidecars: one per app, in its namespace, on its IP, with --local-ip and its own token.
    sidecars: list[Sidecar] = []
    per_app: Counter[str] = Counter()
    gateways: dict[str, str] = {}  # gateway name -> compose service
    for name in running("sidecar"):
        got = parsed(name, "sidecar")
        if got is None:
            continue
        token_file = got.pop("token_file")
        identity = sidecar_identity(**got)
        sidecars.append(Sidecar(name, identity, token_file and str(token_file), got["xds"]))
        if identity.gateway:  # no app: its own namespace, where the mesh says it listens
            gateways[identity.service] = name
            if identity.ip != mesh_ip(services[name]) or identity.local_ip != LOCAL_IP:
                found.append(f"{name}: a gateway needs --ip its mesh IP, --local-ip {LOCAL_IP}")
            if token_file is None or got["xds"] != cp["xds"]:
                found.append(f"{name}: a gateway needs a --token-file and the control plane's xds")
            continue
        app_name = str(services[name].get("network_mode", "")).removeprefix("service:")
        if app_name not in apps:
            found.append(f"{name}: does not share an app's network namespace")
            continue
        per_app[app_name] += 1
        app, env = apps[app_name], apps[app_name]["environment"]
        if token_file is None:
            found.append(f"{name}: no --token-file")
        if identity.local_ip != LOCAL_IP:
            found.append(f"{name}: --local-ip is {identity.local_ip}, not {LOCAL_IP}")
        if identity.ip != mesh_ip(app):
            found.append(f"{name}: --ip {identity.ip} is not {app_name}'s {mesh_ip(app)}")
        wanted = (env["MESH_SERVICE"], (("version", env.get("MESH_VERSION")),))
        if (identity.service, identity.labels) != wanted:
            found.append(f"{name}: --service/--version differ from {app_name}'s")
        if str(identity.app_port) != str(env.get("MESH_APP_PORT")):
            found.append(f"{name}: --app-port differs from {app_name}'s MESH_APP_PORT")
        if got["xds"] != cp["xds"]:
            found.append(f"{name}: --xds {got['xds']} is not the control plane's")
    for app_name in apps:
        if per_app[app_name] != 1:
            found.append(f"{app_name}: {per_app[app_name]} sidecars")

    # Every instance `meshpilot up` runs for the demo mesh, and no other.
    spec = load_mesh(DEMO)
    local = Counter(
        (s, r.version)
        for s, svc in spec.services.items()
        for r in svc.run
        for _ in range(r.replicas)
    )
    composed = Counter(
        (a["environment"]["MESH_SERVICE"], a["environment"].get("MESH_VERSION"))
        for a in apps.values()
    )
    if composed != local:
        found.append(f"instances {sorted(composed.elements())} != the demo mesh's")
    if sorted(gateways) != sorted(spec.gateways):
        found.append(f"gateways {sorted(gateways)} != the demo mesh's")

    # The trace collector the demo mesh names: a service of this file, on the mesh network.
    tracing = spec.telemetry.tracing if spec.telemetry else None
    collector = tracing.collector if tracing else None
    if collector is None:
        found.append("the demo mesh names no trace collector")
    elif mesh_ip(services.get(host(collector), {})) is None:
        found.append(f"the demo mesh's collector {collector} is no service on the mesh network")

    # The tokens service: one token per sidecar and one for the mixer, each in a volume of its own
    # that the holder mounts read-only (and nothing else), and no other service but `tokens` mounts.
    if TOKENS_SERVICE not in services:
        return [*found, "no tokens service"]
    try:
        issued = tokens_issued(token_script(doc))
    except (AssertionError, click.ClickException) as err:
        return [*found, f"tokens: {err}"]
    tokens_mounts = mounts(services[TOKENS_SERVICE])
    if cp_state is None or tokens_mounts.get(str(cp["state_dir"])) != cp_state:
        found.append("tokens: does not mount the control plane's --state-dir volume there")
    holders = [
        (s.name, s.token_file, s.identity.service, dict(s.identity.labels)) for s in sidecars
    ]
    if mixer is not None and mixer["token_file"] is not None:
        holders.append((mixer_name, str(mixer["token_file"]), MIXER_SERVICE, {}))
    tokens_at = {source: target for target, (source, _) in tokens_mounts.items()}
    named = doc.get("volumes") or {}
    read: set[str] = set()  # the files, as the tokens service sees them, that holders read
    for name, file, service, labels in holders:
        if file is None:
            continue  # reported above
        directory = str(Path(file).parent)
        own = mounts(services[name])
        if list(own) != [directory]:
            found.append(f"{name}: mounts {sorted(own)}, not one token volume at {directory}")
        if directory not in own:
            continue
        volume, read_only = own[directory]
        if not read_only:
            found.append(f"{name}: mounts its token volume {volume} writable")
        if volume not in named:
            found.append(f"{name}: {volume} is not a named volume")
        sharing = sorted(
            other
            for other, s in services.items()
            if other not in (name, TOKENS_SERVICE)
            and volume in {source for source, _ in mounts(s).values()}
        )
        if sharing:
            found.append(f"{name}: its token volume {volume} is also mounted by {sharing}")
        if volume not in tokens_at:
            found.append(f"{name}: the tokens service does not mount its token volume {volume}")
            continue
        written = str(Path(tokens_at[volume]) / Path(file).name)
        read.add(written)
        mine = [t for t in issued if t.file == written]
        if len(mine) != 1:
            found.append(f"{name}: {len(mine)} tokens written to {written} (its --token-file)")
        elif (mine[0].service, mine[0].labels) != (service, labels):
            found.append(f"{name}: its token is for {mine[0].service} {mine[0].labels}")
    for token in issued:
        if token.file not in read:
            found.append(f"tokens: {token.file} is no sidecar's or mixer's --token-file")
        if token.state_dir != cp["state_dir"] or token.mesh != cp["mesh"]:
            found.append(f"tokens: {token.file} not issued with the control plane's state and mesh")
    for name in [cp_name, *mixers, *(s.name for s in sidecars)]:
        if not after_tokens(services[name]):
            found.append(f"{name}: does not depend on tokens completing successfully")
    if mixer is not None:
        found += monitoring_problems(services, cp_name, cp, mixer_name, mixer)
    return found


def monitoring_problems(
    services: dict[str, Doc], cp_name: str, cp: dict[str, Any], mixer_name: str, mixer: Doc
) -> list[str]:
    """Prometheus in the control plane's namespace scraping its admin API (which stays on
    loopback) and the mixer; Grafana on a monitoring network no mesh workload joins, reaching
    Prometheus there; neither listens on a wildcard address (their default)."""
    found: list[str] = []
    prometheus, grafana = services.get(PROMETHEUS, {}), services.get(GRAFANA, {})
    if prometheus.get("network_mode") != f"service:{cp_name}":
        found.append(f"{PROMETHEUS}: not in the control plane's network namespace")
    options = dict(str(word).partition("=")[::2] for word in argv(prometheus))
    listen = options.get("--web.listen-address", "")
    monitoring_ips = {
        net: attached["ipv4_address"]
        for net, attached in (services[cp_name].get("networks") or {}).items()
        if net != "mesh"
    }
    if host(listen) not in monitoring_ips.values():
        found.append(f"{PROMETHEUS}: --web.listen-address {listen!r} is not on {monitoring_ips}")
    config_mount = mounts(prometheus).get(options.get("--config.file", ""))
    if config_mount != (f"./{PROMETHEUS_CONFIG.relative_to(ROOT)}", True):
        found.append(f"{PROMETHEUS}: --config.file is not {PROMETHEUS_CONFIG.name}, read-only")
    scraped = {
        target
        for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    wanted = {cp["admin"], f"{mixer_name}:{mixer['metrics'].rpartition(':')[2]}"}
    if scraped != wanted:
        found.append(f"{PROMETHEUS}: scrapes {sorted(scraped)}, not {sorted(wanted)}")

    grafana_nets = grafana.get("networks") or {}
    if set(grafana_nets) - set(monitoring_ips) or not grafana_nets:
        found.append(f"{GRAFANA}: on {sorted(grafana_nets)}, not the monitoring network only")
    env = grafana.get("environment") or {}
    own_ips = [attached.get("ipv4_address") for attached in grafana_nets.values()]
    if env.get("GF_SERVER_HTTP_ADDR") not in own_ips:
        found.append(f"{GRAFANA}: GF_SERVER_HTTP_ADDR is not its own address")
    datasource = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["url"]
    if datasource != f"http://{cp_name}:{listen.rpartition(':')[2]}":
        found.append(f"{GRAFANA}: its datasource {datasource} is not Prometheus' address")
    for name, service in services.items():
        joined = set(service.get("networks") or {}) & set(monitoring_ips)
        if joined and name not in (cp_name, GRAFANA):
            found.append(f"{name}: joins the monitoring network")
    return found


def test_nothing_listens_publicly_and_every_sidecar_holds_its_own_token() -> None:
    assert problems(COMPOSE.read_text()) == []


def edit(change: Callable[[Doc], None]) -> Callable[[str], str]:
    def apply(text: str) -> str:
        doc = copy.deepcopy(yaml.safe_load(text))
        change(doc)
        return yaml.safe_dump(doc, sort_keys=False)

    return apply


def replace(old: str, new: str) -> Callable[[str], str]:
    def apply(text: str) -> str:
        assert old in text, f"{old!r} is not in docker-compose.yml"
        return text.replace(old, new)

    return apply


def services(doc: Doc) -> dict[str, Doc]:
    return doc["services"]  # type: ignore[no-any-return]


def set_word(service: str, old: str, new: str | None) -> Callable[[str], str]:
    """Replace (or with None, drop) one word of a service's command and the value after it."""

    def change(doc: Doc) -> None:
        words = argv(services(doc)[service])
        at = words.index(old)
        words[at : at + (2 if new is None else 1)] = [] if new is None else [new]
        services(doc)[service]["command"] = words

    return edit(change)


def set_script(old: str, new: str) -> Callable[[str], str]:
    def change(doc: Doc) -> None:
        command = services(doc)[TOKENS_SERVICE]["command"]
        assert old in command[2], f"{old!r} is not in the tokens script"
        command[2] = command[2].replace(old, new)

    return edit(change)


def set_env(service: str, key: str, value: str | None) -> Callable[[str], str]:
    def change(doc: Doc) -> None:
        env = services(doc)[service]["environment"]
        if value is None:
            del env[key]
        else:
            env[key] = value

    return edit(change)


def drop(*names: str) -> Callable[[str], str]:
    def change(doc: Doc) -> None:
        for name in names:
            del services(doc)[name]

    return edit(change)


def add(name: str, like: str) -> Callable[[str], str]:
    def change(doc: Doc) -> None:
        services(doc)[name] = copy.deepcopy(services(doc)[like])

    return edit(change)


def set_key(service: str, key: str, value: Any) -> Callable[[str], str]:
    def change(doc: Doc) -> None:
        if value is None:
            del services(doc)[service][key]
        else:
            services(doc)[service][key] = value

    return edit(change)


BREAKAGES = [
    pytest.param(
        replace('"127.0.0.1:18001"', '"0.0.0.0:18001"'), "wildcard", id="admin on a wildcard"
    ),
    pytest.param(
        replace('"127.0.0.1:18001"', '"10.77.0.2:18001"'), "--admin", id="admin on the mesh IP"
    ),
    pytest.param(
        set_word("controlplane", "10.77.0.2:18000", "127.0.0.1:18000"),
        "--xds",
        id="xDS off the mesh IP",
    ),
    pytest.param(
        edit(lambda d: services(d)["controlplane"]["command"].append("--insecure")),
        "--insecure",
        id="plaintext xDS",
    ),
    pytest.param(
        set_key("storefront", "ports", ["15001:15001"]), "publishes ports", id="a published port"
    ),
    pytest.param(
        set_key("pricing", "network_mode", "host"), "network_mode host", id="host networking"
    ),
    pytest.param(
        set_key("grafana", "ports", ["3000:3000"]), "publishes ports", id="Grafana on every address"
    ),
    pytest.param(
        set_key("prometheus", "ports", ["127.0.0.1:9090:9090"]),
        "publishes ports",
        id="another published port",
    ),
    pytest.param(
        set_key("prometheus", "network_mode", None),
        "not in the control plane's network namespace",
        id="Prometheus outside the control plane's namespace",
    ),
    pytest.param(
        replace("--web.listen-address=10.78.0.2:9090", "--web.listen-address=10.77.0.2:9090"),
        "--web.listen-address",
        id="Prometheus on the mesh network",
    ),
    pytest.param(
        edit(lambda d: services(d)["prometheus"]["command"].pop()),
        "--web.listen-address",
        id="Prometheus on its default wildcard address",
    ),
    pytest.param(
        replace("prometheus.yml:/etc/prometheus/prometheus.yml:ro", "prometheus.yml:/etc/p.yml"),
        "--config.file",
        id="Prometheus without the repository's configuration",
    ),
    pytest.param(
        replace('"127.0.0.1:18001"', '"127.0.0.1:18011"'),
        "scrapes",
        id="admin API moved without Prometheus",
    ),
    pytest.param(
        set_env("grafana", "GF_SERVER_HTTP_ADDR", None),
        "GF_SERVER_HTTP_ADDR",
        id="Grafana on its default wildcard address",
    ),
    pytest.param(
        set_key("grafana", "networks", {"mesh": {"ipv4_address": "10.77.0.30"}}),
        "not the monitoring network only",
        id="Grafana on the mesh network",
    ),
    pytest.param(
        set_key("controlplane", "networks", {"mesh": {"ipv4_address": "10.77.0.2"}}),
        "--web.listen-address",
        id="control plane off the monitoring network",
    ),
    pytest.param(
        replace("--web.listen-address=10.78.0.2:9090", "--web.listen-address=10.78.0.2:9091"),
        "datasource",
        id="Grafana's datasource not where Prometheus listens",
    ),
    pytest.param(
        set_key(
            "mixer",
            "networks",
            {"mesh": {"ipv4_address": "10.77.0.3"}, "monitoring": {"ipv4_address": "10.78.0.9"}},
        ),
        "mixer: joins the monitoring network",
        id="a workload on the monitoring network",
    ),
    pytest.param(
        set_word("mixer", "10.77.0.3:18081", "127.0.0.1:18081"), "--listen", id="mixer on loopback"
    ),
    pytest.param(
        set_word("mixer", "10.77.0.3:18082", "127.0.0.1:18082"),
        "--metrics",
        id="metrics on loopback",
    ),
    pytest.param(set_word("mixer", "--token-file", None), "--token-file", id="mixer without token"),
    pytest.param(
        set_word("controlplane", "10.77.0.3:18081", "10.77.0.9:18081"),
        "--mixer",
        id="mixer elsewhere",
    ),
    pytest.param(
        set_word("pricing-sidecar", "--token-file", None),
        "no --token-file",
        id="sidecar without token",
    ),
    pytest.param(
        set_word("catalog-v1-sidecar", "--local-ip", None),
        "--local-ip",
        id="sidecar without --local-ip",
    ),
    pytest.param(
        set_word("catalog-v1-sidecar", "127.0.0.1", "127.0.0.2"),
        "--local-ip",
        id="sidecar --local-ip elsewhere",
    ),
    pytest.param(
        set_word("catalog-v2-sidecar", "10.77.0.13", "10.77.0.12"),
        "--ip",
        id="sidecar on another IP",
    ),
    pytest.param(
        set_word("catalog-v2-sidecar", "v2", "v1"), "--version", id="sidecar of another version"
    ),
    pytest.param(
        set_word("storefront-sidecar", "--local-ip", "--local-address"),
        "No such option",
        id="sidecar with an unknown option",
    ),
    pytest.param(
        set_key("pricing-sidecar", "network_mode", "service:mixer"),
        "namespace",
        id="sidecar outside its app",
    ),
    pytest.param(
        set_word("pricing-sidecar", "10.77.0.2:18000", "10.77.0.9:18000"),
        "not the control plane's",
        id="sidecar xDS elsewhere",
    ),
    pytest.param(
        set_env("storefront", "MESH_BIND_IP", "10.77.0.11"), "MESH_BIND_IP", id="app on its mesh IP"
    ),
    pytest.param(
        set_env("pricing", "MESH_BIND_IP", None), "MESH_BIND_IP", id="app without MESH_BIND_IP"
    ),
    pytest.param(
        set_key("pricing", "volumes", ["token-pricing:/tokens:ro"]),
        "mounts volumes",
        id="app with a volume",
    ),
    pytest.param(drop("pricing-sidecar"), "pricing: 0 sidecars", id="app without sidecar"),
    pytest.param(
        add("pricing-sidecar-2", like="pricing-sidecar"),
        "pricing: 2 sidecars",
        id="app with two sidecars",
    ),
    pytest.param(drop("catalog-v2", "catalog-v2-sidecar"), "instances", id="an instance missing"),
    pytest.param(drop("zipkin"), "collector zipkin:9411", id="no trace collector"),
    pytest.param(
        set_key("zipkin", "networks", None), "collector zipkin:9411", id="collector off the mesh"
    ),
    pytest.param(
        set_key("zipkin", "ports", ["9411:9411"]),
        "zipkin: publishes ports",
        id="collector published",
    ),
    pytest.param(
        set_script(
            "--label version=v2 > /tokens/catalog-v2/token",
            "--label version=v1 > /tokens/catalog-v2/token",
        ),
        "its token is for",
        id="token with the wrong label",
    ),
    pytest.param(
        set_script("--service pricing", "--service catalog"),
        "its token is for",
        id="token for another service",
    ),
    pytest.param(
        set_script("> /tokens/pricing/token", "> /tokens/pricing/token-old"),
        "0 tokens",
        id="no token for a sidecar",
    ),
    pytest.param(
        set_script("> /tokens/mixer/token", "> /tokens/mixer/token2"),
        "0 tokens",
        id="no token for the mixer",
    ),
    pytest.param(
        set_script("--service pricing", "--service pricing --state-dir /elsewhere"),
        "state",
        id="tokens in another state dir",
    ),
    pytest.param(
        set_key("catalog-v1-sidecar", "volumes", None),
        "not one token volume",
        id="token volume not mounted",
    ),
    pytest.param(
        set_key("catalog-v1-sidecar", "volumes", ["token-catalog-v1:/tokens"]),
        "writable",
        id="token volume writable",
    ),
    pytest.param(
        set_key(
            "catalog-v1-sidecar", "volumes", ["token-catalog-v1:/tokens:ro", "state:/state:ro"]
        ),
        "not one token volume",
        id="sidecar mounting another volume too",
    ),
    pytest.param(
        set_key("pricing-sidecar", "volumes", ["token-catalog-v1:/tokens:ro"]),
        "token-catalog-v1 is also mounted by ['pricing-sidecar']",
        id="sidecar mounting another instance's token volume",
    ),
    pytest.param(
        set_key("controlplane", "volumes", ["state:/state", "token-pricing:/tokens:ro"]),
        "token-pricing is also mounted by ['controlplane']",
        id="token volume shared with the control plane",
    ),
    pytest.param(
        set_key("mixer", "volumes", ["./tokens/mixer:/tokens:ro"]),
        "not a named volume",
        id="token in a bind mount",
    ),
    pytest.param(
        edit(
            lambda d: services(d)[TOKENS_SERVICE]["volumes"].remove("token-pricing:/tokens/pricing")
        ),
        "does not mount its token volume token-pricing",
        id="token volume the tokens service does not write",
    ),
    pytest.param(
        set_key("controlplane", "depends_on", None),
        "controlplane: does not depend",
        id="control plane before tokens",
    ),
    pytest.param(
        set_key("pricing-sidecar", "depends_on", ["pricing"]),
        "pricing-sidecar: does not depend",
        id="sidecar before tokens",
    ),
]


@pytest.mark.parametrize(("change", "expected"), BREAKAGES)
def test_each_check_fails_on_a_file_that_breaks_it(
    change: Callable[[str], str], expected: str
) -> None:
    found = problems(change(COMPOSE.read_text()))
    assert any(expected in problem for problem in found), found


def test_the_tokens_service_issues_tokens_that_verify(tmp_path: Path) -> None:
    """Run the tokens service's script for real (its paths moved into tmp_path), then check each
    token file as the sidecar and the control plane would."""
    doc = yaml.safe_load(COMPOSE.read_text())
    script = token_script(doc)
    for path in ("/state", "/tokens"):
        script = script.replace(f" {path}", f" {tmp_path}{path}")
    script = script.replace(" /mesh/mesh.yaml", f" {DEMO}")
    assert " /state" not in script and " /tokens" not in script, script
    # The token volumes, as mounted in the tokens service, holding an earlier run's files.
    tokens_at = {}
    for target, (volume, _) in mounts(services(doc)[TOKENS_SERVICE]).items():
        if target.startswith("/tokens/"):
            tokens_at[volume] = tmp_path / target.lstrip("/")
            tokens_at[volume].mkdir(parents=True)
            (tokens_at[volume] / "stale").write_text("an earlier run's file")
            (tokens_at[volume] / "token").write_text("an earlier run's token")
            (tokens_at[volume] / "token").chmod(0o644)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr

    # Each sidecar's and the mixer's --token-file, where the tokens service wrote it.
    holders: dict[Path, tuple[str, dict[str, str]]] = {}
    for service in services(doc).values():
        words = argv(service)
        if words[:2] == ["meshpilot", "sidecar"]:
            got = params("sidecar", words[2:])
            token_file = Path(got.pop("token_file"))
            identity = sidecar_identity(**got)
            holder = (identity.service, dict(identity.labels))
        elif words[:2] == ["meshpilot", "mixer"]:
            token_file = Path(params("mixer", words[2:])["token_file"])
            holder = (MIXER_SERVICE, {})
        else:
            continue
        (volume, _) = mounts(service)[str(token_file.parent)]
        holders[tokens_at[volume] / token_file.name] = holder
    written = {p for p in (tmp_path / "tokens").rglob("*") if not p.is_dir()}
    assert written == set(holders)  # each token volume holds its holder's token and nothing else

    # What `serve --state-dir` opens: the same CA and token key the script made.
    authority = open_mesh_identity(load_mesh(DEMO), DEMO.parent, tmp_path / "state").tokens
    for name, (service, labels) in holders.items():
        assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
        token = read_token_file(name, service)  # what the sidecar or mixer checks
        grant = authority.verify(token)
        assert (grant.service, dict(grant.labels)) == (service, labels), name
        assert not grant.any_address, name
