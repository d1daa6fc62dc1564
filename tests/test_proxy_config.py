"""`proxy-config` tables and `diff`'s normaliser and differ, on resources the translator really
builds (rendered from a mesh file) and on the shapes a real Envoy's /config_dump gives them."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from google.protobuf import json_format
from google.protobuf.any_pb2 import Any as AnyProto

from meshpilot.admin.config_diff import (
    CONTROL_PLANE,
    SIDECAR,
    comparable_endpoints,
    compared_count,
    diff_configs,
    format_report,
)
from meshpilot.admin.http import HttpServer, Reply
from meshpilot.admin.proxy_config import (
    cluster_rows,
    endpoint_rows,
    format_tables,
    listener_rows,
    route_rows,
    scoped_route_rows,
    secret_rows,
)
from meshpilot.admin.proxy_dump import ProxyConfig, canonical, sent_config
from meshpilot.cli import main
from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.sds import secrets
from meshpilot.render import render_resources
from meshpilot.runner.addresses import LoopbackAllocator
from meshpilot.xds.types import BY_SHORT, CLUSTER
from tests.support.certs import workload_credentials

MESH = """
mesh: pc
services:
  productpage:
    port: 9080
  reviews:
    port: 9080
    subsets:
      v1: {version: v1}
      v2: {version: v2}
    endpoints:
      - {address: 10.1.0.7, port: 15006, labels: {version: v1}}
    routes:
      - name: testers
        match: {path_prefix: /, headers: {x-user: tester}}
        to: [{subset: v2}]
      - name: items
        match: {path_regex: "/items/[0-9]+"}
        to: [{subset: v1}]
      - name: split
        to: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]
  db:
    port: 5432
    protocol: tcp
    subsets: {v1: {version: v1}, v2: {version: v2}}
    routes:
      - name: split
        to: [{subset: v1, weight: 80}, {subset: v2, weight: 20}]
"""


@pytest.fixture
def config(tmp_path: Path) -> ProxyConfig:
    """What the control plane would send productpage (static endpoints only), canonical."""
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(MESH)
    rendered = render_resources(mesh, "productpage", None, "all")
    return sent_config({BY_SHORT[short].url: items for short, items in rendered.items()})


def by_first_column(rows: list[list[str]]) -> dict[str, list[str]]:
    return {row[0]: row for row in rows[1:]}


def test_the_canonical_form_is_envoys_whichever_json_came_in(config: ProxyConfig) -> None:
    cluster = next(c for c in config["cluster"] if c["name"] == "outbound|9080|v1|reviews")
    assert "eds_cluster_config" in cluster and "connect_timeout" in cluster
    camel = json_format.MessageToDict(json_format.ParseDict(cluster, AnyProto()))
    assert "edsClusterConfig" in camel
    assert canonical(camel) == canonical(cluster) == cluster


def test_cluster_table(config: ProxyConfig) -> None:
    rows = cluster_rows(config["cluster"])
    assert rows[0] == ["NAME", "TYPE", "EDS SERVICE", "LB POLICY", "TLS"]
    clusters = by_first_column(rows)
    assert clusters["outbound|9080|v1|reviews"] == [
        "outbound|9080|v1|reviews",
        "EDS",
        "outbound|9080|v1|reviews",
        "ROUND_ROBIN",
        "-",  # static endpoints have no sidecar: plaintext
    ]
    assert clusters["outbound|9080||productpage"][4] == "tls"  # mTLS to a sidecar
    assert clusters["inbound|8080||"][1:3] == ["STATIC", "-"]
    assert [row[0] for row in rows[1:]] == sorted(row[0] for row in rows[1:])


def test_listener_table_summarises_each_filter_chain(config: ProxyConfig) -> None:
    listeners = by_first_column(listener_rows(config["listener"]))
    assert listeners["outbound"][1:] == ["127.0.0.1:15001", "http -> srds outbound"]
    assert listeners["inbound"][1:] == ["127.0.0.1:15006", "tls http -> inline inbound"]
    assert listeners["outbound_tcp|5432|db"][1:] == [
        "127.0.0.1:5432",
        "tcp -> outbound|5432|v1|db 80%, outbound|5432|v2|db 20%",
    ]


def test_route_table_shows_matches_and_where_they_go(config: ProxyConfig) -> None:
    rows = route_rows(config["route"])
    assert rows[0] == ["ROUTE CONFIG", "DOMAINS", "ROUTE", "MATCH", "TO"]
    routes = {row[2]: row for row in rows[1:]}
    assert routes["reviews/testers"] == [
        "outbound|reviews",
        "reviews,reviews:9080",
        "reviews/testers",
        "prefix / x-user=tester",
        "outbound|9080|v2|reviews",
    ]
    assert routes["reviews/items"][3:] == ["regex /items/[0-9]+", "outbound|9080|v1|reviews"]
    assert (
        routes["reviews/split"][4] == "outbound|9080|v1|reviews 90%, outbound|9080|v2|reviews 10%"
    )
    assert list(routes) == [
        "db/split",
        "productpage/default",
        "reviews/testers",
        "reviews/items",
        "reviews/split",
    ]


def test_scoped_route_and_endpoint_tables(config: ProxyConfig) -> None:
    scopes = by_first_column(scoped_route_rows(config["scoped-route"]))
    assert scopes["outbound|reviews"] == ["outbound|reviews", "reviews", "outbound|reviews"]
    endpoints = endpoint_rows(config["endpoint"])
    assert endpoints[0] == ["CLUSTER", "ENDPOINT", "HEALTH", "WEIGHT", "PRIORITY"]
    assert ["outbound|9080|v1|reviews", "10.1.0.7:15006", "-", "1", "0"] in endpoints
    assert not any(row[0] == "outbound|9080|v2|reviews" for row in endpoints)


def test_all_tables_one_after_another(config: ProxyConfig) -> None:
    text = format_tables(config)
    headers = [block.splitlines()[0].split()[0] for block in text.split("\n\n")]
    assert headers == ["NAME", "NAME", "ROUTE", "NAME", "CLUSTER"]


def test_secret_table_shows_expiry_and_spiffe_id(tmp_path: Path) -> None:
    ca = CertificateAuthority.open(tmp_path / "ca", "demo")
    credentials = workload_credentials(ca, "reviews")
    dumped = [
        json_format.MessageToDict(s, preserving_proto_field_name=True)
        for s in secrets(credentials).values()
    ]
    rows = by_first_column(secret_rows(dumped))
    expires = credentials.certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M:%SZ")
    assert rows["default"] == ["default", "certificate", expires, "spiffe://demo/service/reviews"]
    assert rows["ROOTCA"][1] == "trust anchor"
    assert "meshpilot" in rows["ROOTCA"][3]


def envoy_dumped(assignment: dict[str, Any]) -> dict[str, Any]:
    """An endpoint assignment as Envoy's /config_dump rebuilds it from its hosts."""
    dumped = copy.deepcopy(assignment)
    for group in dumped.get("endpoints", []):
        group.setdefault("load_balancing_weight", 0)
        for lb_endpoint in group["lb_endpoints"]:
            lb_endpoint["health_status"] = "HEALTHY"
            lb_endpoint.setdefault("load_balancing_weight", 1)
            lb_endpoint["endpoint"]["health_check_config"] = {}
    dumped["policy"] = {"overprovisioning_factor": 140}
    return dumped


def test_envoys_endpoint_defaults_are_not_differences(config: ProxyConfig) -> None:
    sent = next(a for a in config["endpoint"] if a["cluster_name"] == "outbound|9080|v1|reviews")
    held = envoy_dumped(sent)
    assert held != sent
    assert comparable_endpoints(held) == comparable_endpoints(sent)
    moved = copy.deepcopy(held)
    moved["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"][
        "port_value"
    ] = 15007
    assert comparable_endpoints(moved) != comparable_endpoints(sent)
    weighted = copy.deepcopy(held)
    weighted["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"] = 3
    assert comparable_endpoints(weighted) != comparable_endpoints(sent)


def sidecar_view(config: ProxyConfig) -> ProxyConfig:
    """`config` as a sidecar in sync would dump it: endpoint defaults, plus the members of its
    static inbound cluster, which Envoy lists among its dynamic endpoint assignments too."""
    held = copy.deepcopy(config)
    held["endpoint"] = [envoy_dumped(a) for a in held["endpoint"]]
    inbound = next(c for c in held["cluster"] if c["name"] == "inbound|8080||")
    held["endpoint"].append(envoy_dumped(inbound["load_assignment"]))
    held["secret"] = []
    return held


def test_a_sidecar_in_sync_has_no_difference(config: ProxyConfig) -> None:
    held = sidecar_view(config)
    assert diff_configs(config, held) == []
    compared = compared_count(config, held)
    assert compared == sum(len(config[k]) for k in config)
    assert format_report("n~1", [], compared) == f"n~1: in sync ({compared} resources compared)"


def test_changed_missing_and_extra_resources(config: ProxyConfig) -> None:
    held = sidecar_view(config)
    table = next(r for r in held["route"] if r["name"] == "outbound|reviews")
    split = table["virtual_hosts"][0]["routes"][2]["route"]["weighted_clusters"]
    split["clusters"][0]["weight"] = 100
    split["clusters"][1]["weight"] = 0
    held["cluster"] = [c for c in held["cluster"] if c["name"] != "outbound|9080|v2|reviews"]
    held["endpoint"] = [
        a for a in held["endpoint"] if a["cluster_name"] != "outbound|9080|v2|reviews"
    ]
    held["listener"].append({**held["listener"][0], "name": "stray"})

    diffs = diff_configs(config, held)
    assert [(d.kind, d.name, d.only_in) for d in diffs] == [
        ("cluster", "outbound|9080|v2|reviews", CONTROL_PLANE),
        ("listener", "stray", SIDECAR),
        ("route", "outbound|reviews", None),
        ("endpoint", "outbound|9080|v2|reviews", CONTROL_PLANE),
    ]
    lines = diffs[2].lines
    assert lines[:2] == (
        "--- control plane route outbound|reviews",
        "+++ sidecar route outbound|reviews",
    )
    changed = [line.replace(" ", "") for line in lines[3:] if line[0] in "+-"]
    assert changed == ['-"weight":90', '+"weight":100', '-"weight":10', '+"weight":0'], lines

    report = format_report("n~1", diffs, compared_count(config, held)).splitlines()
    assert report[0] == "--- control plane route outbound|reviews"
    assert report[-4:] == [
        "only in control plane: cluster outbound|9080|v2|reviews",
        "only in sidecar: listener stray",
        "only in control plane: endpoint outbound|9080|v2|reviews",
        "n~1: out of sync: changed 1, only in control plane 2, only in sidecar 1",
    ]


def invoke(*argv: str) -> Result:
    return CliRunner().invoke(main, list(argv))


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_control_plane_has_no_secrets_to_show() -> None:
    error = one_line_error(invoke("proxy-config", "n~1", "--type", "secret"))
    assert error.startswith("error: the control plane sends no secrets")
    assert error.endswith("use --from sidecar")


@pytest.fixture
def ip() -> Iterator[str]:
    allocator = LoopbackAllocator()
    yield allocator.ip()
    allocator.release()


PROXYLESS = {
    "node_id": "grpc~10.0.0.9",
    "service": "client",
    "ip": "10.0.0.9",
    "proxyless": True,
    "types": {},
}


@pytest.mark.parametrize(
    ("proxies", "argv", "expected"),
    [
        ([], ["proxy-config", "x~1"], "error: no proxy 'x~1': no proxies connected"),
        ([], ["diff", "x~1"], "error: no proxy 'x~1': no proxies connected"),
        (
            [PROXYLESS],
            ["proxy-config", "10.0.0.9", "--from", "sidecar"],
            "error: grpc~10.0.0.9 is a proxyless gRPC client: it has no Envoy admin "
            "(proxy-config --from control-plane shows what it was sent)",
        ),
        (
            [PROXYLESS, {**PROXYLESS, "node_id": "other~10.0.0.9"}],
            ["diff", "10.0.0.9"],
            "error: 10.0.0.9 is the IP of several proxies (grpc~10.0.0.9, other~10.0.0.9): "
            "give a node id",
        ),
    ],
)
async def test_a_node_that_cannot_be_asked_is_one_line(
    ip: str, proxies: list[dict[str, Any]], argv: list[str], expected: str
) -> None:
    server = HttpServer(f"{ip}:18001", {"/proxies": lambda _: Reply.json(proxies)})
    await server.start()
    try:
        result = await asyncio.to_thread(invoke, *argv, "--admin", f"{ip}:18001")
    finally:
        await server.stop()
    assert one_line_error(result) == expected


async def test_the_control_planes_view_through_a_token_protected_admin_api(
    ip: str, tmp_path: Path, config: ProxyConfig
) -> None:
    """Both GETs carry the token; the admin API's proto3 JSON comes out as Envoy's JSON."""
    sent = {
        CLUSTER: {
            "version": "v1",
            "resources": [
                json_format.MessageToDict(json_format.ParseDict(c, AnyProto()))
                for c in config["cluster"]
            ],
        }
    }
    node = {**PROXYLESS, "node_id": "productpage~10.0.0.8", "ip": "10.0.0.8", "proxyless": False}
    routes = {
        "/proxies": lambda _: Reply.json([node]),
        "/config_dump": lambda q: Reply.json(sent, 200 if q == {"node": node["node_id"]} else 404),
    }
    server = HttpServer(f"{ip}:18001", routes, token="s3cret")  # type: ignore[arg-type]
    token_file = tmp_path / "admin-token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    argv = ["proxy-config", "10.0.0.8", "--admin", f"{ip}:18001", "-o", "json"]
    await server.start()
    try:
        shown = await asyncio.to_thread(invoke, *argv, "--admin-token-file", str(token_file))
        refused = await asyncio.to_thread(invoke, *argv)
    finally:
        await server.stop()
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {
        "cluster": config["cluster"],
        "listener": [],
        "route": [],
        "scoped-route": [],
        "endpoint": [],
    }
    assert one_line_error(refused).endswith(
        "answered 401 to GET /proxies (give --admin-token-file)"
    )
