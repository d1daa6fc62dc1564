"""`meshpilot proxy-config`: one proxy's clusters, listeners, routes, route scopes, endpoints and
secrets as tables of their key fields (like `istioctl proxy-config`), or as Envoy JSON."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

from meshpilot.admin.proxy_dump import ConfigAccess, ProxyConfig, Resource, fetch_config
from meshpilot.admin.status import format_table
from meshpilot.errors import MeshpilotError

_HCM = "envoy.filters.network.http_connection_manager"
_TCP_PROXY = "envoy.filters.network.tcp_proxy"


def cluster_rows(clusters: list[Resource]) -> list[list[str]]:
    rows = [["NAME", "TYPE", "EDS SERVICE", "LB POLICY", "TLS"]]
    for c in clusters:
        eds = c.get("eds_cluster_config", {}).get("service_name") or c["name"]
        tls = "transport_socket" in c
        rows.append(
            [
                c["name"],
                c.get("type", "STATIC"),
                eds if c.get("type") == "EDS" else "-",
                c.get("lb_policy", "ROUND_ROBIN"),
                "tls" if tls else "-",
            ]
        )
    return rows


def listener_rows(listeners: list[Resource]) -> list[list[str]]:
    rows = [["NAME", "ADDRESS:PORT", "FILTER CHAINS"]]
    for listener in listeners:
        socket = listener.get("address", {}).get("socket_address", {})
        where = f"{socket.get('address', '')}:{socket.get('port_value', 0)}"
        chains = [*listener.get("filter_chains", [])]
        if "default_filter_chain" in listener:
            chains.append(listener["default_filter_chain"])
        rows.append([listener["name"], where, "; ".join(map(chain_summary, chains))])
    return rows


def chain_summary(chain: dict[str, Any]) -> str:
    """What a filter chain does, in a few words: `tls` when it terminates TLS, then per
    network filter where it sends requests (`http -> rds NAME`, `tcp -> CLUSTER`)."""
    parts = ["tls"] if "transport_socket" in chain else []
    parts += [_filter_summary(f) for f in chain.get("filters", [])]
    return " ".join(parts)


def _filter_summary(network_filter: dict[str, Any]) -> str:
    config = network_filter.get("typed_config", {})
    if network_filter.get("name") == _HCM:
        if "rds" in config:
            return f"http -> rds {config['rds'].get('route_config_name', '')}"
        if "scoped_routes" in config:
            return f"http -> srds {config['scoped_routes'].get('name', '')}"
        return f"http -> inline {config.get('route_config', {}).get('name', '')}"
    if network_filter.get("name") == _TCP_PROXY:
        if "weighted_clusters" in config:
            return f"tcp -> {_weights(config['weighted_clusters'])}"
        return f"tcp -> {config.get('cluster', '?')}"
    return str(network_filter.get("name", "?"))


def route_rows(tables: list[Resource]) -> list[list[str]]:
    rows = [["ROUTE CONFIG", "DOMAINS", "ROUTE", "MATCH", "TO"]]
    for table in tables:
        for vhost in table.get("virtual_hosts", []):
            domains = ",".join(vhost.get("domains", []))
            for route in vhost.get("routes", []):
                rows.append(
                    [table["name"], domains, route.get("name", "-"), match_summary(route),
                     action_summary(route)]
                )  # fmt: skip
    return rows


def match_summary(route: dict[str, Any]) -> str:
    """`prefix /`, `path /x`, `regex ^/a` and each header test as `NAME=VALUE`."""
    match = route.get("match", {})
    parts = [
        f"{key.removesuffix('_match')} {match[key]}"
        for key in ("prefix", "path", "path_separated_prefix")
        if key in match
    ]
    if "safe_regex" in match:
        parts.append(f"regex {match['safe_regex'].get('regex', '')}")
    parts += [_header_summary(h) for h in match.get("headers", [])]
    return " ".join(parts) or "*"


def _header_summary(header: dict[str, Any]) -> str:
    name = header.get("name", "")
    string_match = header.get("string_match", {})
    if "exact" in string_match:
        return f"{name}={string_match['exact']}"
    if "safe_regex" in string_match:
        return f"{name}~{string_match['safe_regex'].get('regex', '')}"
    if "present_match" in header:
        return f"{name} present"
    test = next(iter(string_match.items()), ("", ""))
    return f"{name} {test[0]} {test[1]}".strip()


def action_summary(route: dict[str, Any]) -> str:
    """The cluster, the weighted split (`A 90%, B 10%`), or a direct answer."""
    action = route.get("route", {})
    if "cluster" in action:
        return str(action["cluster"])
    if "weighted_clusters" in action:
        return _weights(action["weighted_clusters"])
    if "direct_response" in route:
        return f"direct {route['direct_response'].get('status', '?')}"
    if "redirect" in route:
        return "redirect"
    return "-"


def _weights(weighted_clusters: dict[str, Any]) -> str:
    """`A 90%, B 10%`: each cluster's share of the total weight."""
    clusters = weighted_clusters.get("clusters", [])
    total = sum(c.get("weight", 0) for c in clusters) or 1
    return ", ".join(f"{c['name']} {c.get('weight', 0) * 100 // total}%" for c in clusters)


def scoped_route_rows(scopes: list[Resource]) -> list[list[str]]:
    rows = [["NAME", "KEY", "ROUTE CONFIG"]]
    for scope in scopes:
        fragments = scope.get("key", {}).get("fragments", [])
        key = ",".join(str(f.get("string_key", "")) for f in fragments)
        rows.append([scope["name"], key, scope.get("route_configuration_name", "-")])
    return rows


def endpoint_rows(assignments: list[Resource]) -> list[list[str]]:
    """One row per endpoint; HEALTH and the weights as the source knows them (the control plane
    sends no health: `-`; an endpoint without a weight has weight 1)."""
    rows = [["CLUSTER", "ENDPOINT", "HEALTH", "WEIGHT", "PRIORITY"]]
    for assignment in assignments:
        for group in assignment.get("endpoints", []):
            for lb_endpoint in group.get("lb_endpoints", []):
                rows.append(
                    [
                        assignment["cluster_name"],
                        _endpoint_address(lb_endpoint.get("endpoint", {})),
                        lb_endpoint.get("health_status", "-"),
                        str(lb_endpoint.get("load_balancing_weight", 1)),
                        str(group.get("priority", 0)),
                    ]
                )
    return rows


def _endpoint_address(endpoint: dict[str, Any]) -> str:
    address = endpoint.get("address", {})
    if "pipe" in address:
        return str(address["pipe"].get("path", ""))
    socket = address.get("socket_address", {})
    return f"{socket.get('address', '')}:{socket.get('port_value', 0)}"


def secret_rows(secrets: list[Resource]) -> list[list[str]]:
    rows = [["NAME", "TYPE", "EXPIRES", "SUBJECT"]]
    for secret in secrets:
        if "tls_certificate" in secret:
            pem = secret["tls_certificate"].get("certificate_chain", {})
            rows.append([secret["name"], "certificate", *_certificate_summary(pem)])
        elif "validation_context" in secret:
            pem = secret["validation_context"].get("trusted_ca", {})
            rows.append([secret["name"], "trust anchor", *_certificate_summary(pem)])
        else:
            rows.append([secret["name"], "other", "-", "-"])
    return rows


def _certificate_summary(source: dict[str, Any]) -> list[str]:
    """The first certificate's expiry (UTC) and its SPIFFE ID, else its subject; `-` for a
    file reference or anything that does not parse."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(base64.b64decode(source["inline_bytes"]))
    except (KeyError, ValueError):
        return ["-", "-"]
    expires = cert.not_valid_after_utc.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return [expires, uris[0] if uris else cert.subject.rfc4514_string() or "-"]


TABLES: dict[str, Callable[[list[Resource]], list[list[str]]]] = {
    "cluster": cluster_rows,
    "listener": listener_rows,
    "route": route_rows,
    "scoped-route": scoped_route_rows,
    "endpoint": endpoint_rows,
    "secret": secret_rows,
}


def selected(config: ProxyConfig, type_: str) -> ProxyConfig:
    """The kinds `--type` asks for, in the order of the kinds table."""
    return {k: v for k, v in config.items() if type_ in ("all", k)}


def format_tables(config: ProxyConfig) -> str:
    """One table per kind, a blank line between them (headers say which is which)."""
    return "\n\n".join(_tables(config))


def _tables(config: ProxyConfig) -> Iterator[str]:
    for kind, resources in config.items():
        yield format_table(TABLES[kind](resources))


def format_json(config: ProxyConfig) -> str:
    return json.dumps(config, indent=2)


def print_proxy_config(
    node: str,
    type_: str,
    source: str,
    output: str,
    access: ConfigAccess,
) -> None:
    """Fetch NODE's configuration from `source` and print the kinds `type_` selects."""
    if source == "control-plane" and type_ == "secret":
        raise MeshpilotError(
            "the control plane sends no secrets: each sidecar's agent serves its certificate "
            "over SDS; use --from sidecar"
        )
    config = selected(fetch_config(node, source, access), type_)
    print(format_json(config) if output == "json" else format_tables(config))
