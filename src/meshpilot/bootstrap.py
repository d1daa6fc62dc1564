"""Envoy bootstrap for one sidecar instance: who it is (node) and where its control plane is.

Everything else (listeners, clusters, routes, endpoints) comes over ADS, so the bootstrap stays
small: the node identity with its metadata, the admin endpoint on `IP:15000`, the ADS config
source and one static cluster, `xds_cluster`, that reaches the control plane over HTTP/2 (with
replicas, `--xds` lists all of them: each is an endpoint of that cluster, and a sidecar whose
replica goes away reconnects to another).

A secure sidecar (with a join token, `ControlChannel`) also gets: TLS to the control plane,
trusting only the mesh CA the token pins and checking the server's name; the token as ADS
metadata; the instance IP as the xDS connection's source (the control plane checks it against
the address the node registers); and a second static cluster, SDS_CLUSTER, reaching the agent's
SDS socket, from which Envoy gets its workload certificate.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import yaml

from meshpilot.errors import MeshpilotError
from meshpilot.model.ir import Labels, labels_of
from meshpilot.model.locality import Locality, locality_problem
from meshpilot.model.names import SDS_CLUSTER
from meshpilot.model.proxies import ADMIN_PORT

XDS_CLUSTER = "xds_cluster"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
UPSTREAM_TLS = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
# ADS reconnect backoff: Envoy draws a jittered delay below base * 2^n, capped at max. With a
# 100ms base and a 500ms cap a sidecar is back within about half a second of the control plane.
RETRY_BASE_INTERVAL = "0.1s"
RETRY_MAX_INTERVAL = "0.5s"

DOWNSTREAM_CONNECTIONS = (
    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig"
)
MAX_DOWNSTREAM_CONNECTIONS = 50_000
# `--xds-protocol` values and Envoy's ADS api_type for each.
XDS_PROTOCOLS = {"delta": "DELTA_GRPC", "sotw": "GRPC"}

_LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$")


class BadSidecarOption(MeshpilotError):
    """A sidecar option (label, address) cannot be used."""


@dataclass(frozen=True)
class SidecarIdentity:
    """One instance of a service: its IP, app port, labels and the control plane it talks to."""

    service: str
    ip: str
    app_port: int
    labels: Labels
    xds_host: str
    xds_port: int
    # The app's IP when it differs from the instance IP (`--local-ip`): admin, outbound port
    # and the app live there, the instance IP carries only the inbound port.
    local_ip: str | None = None
    xds_protocol: str = "delta"  # incremental ("delta") or state of the world ("sotw")
    gateway: bool = False  # the mesh's gateway named `service`, not an instance of a service
    locality: Locality | None = None  # where it runs: node.locality
    xds_replicas: tuple[tuple[str, int], ...] = ()  # more control-plane replicas, after the first

    @property
    def xds_addresses(self) -> tuple[tuple[str, int], ...]:
        """Every control-plane replica the sidecar may stream to, as (host, port)."""
        return ((self.xds_host, self.xds_port), *self.xds_replicas)

    @property
    def first_xds(self) -> str:
        """The first control plane as HOST:PORT: where the agent gets certificates."""
        return f"{url_host(self.xds_host)}:{self.xds_port}"

    @property
    def node_id(self) -> str:
        return f"{self.service}~{self.ip}"

    @property
    def app_ip(self) -> str:
        return self.local_ip or self.ip

    @property
    def admin_url(self) -> str:
        return f"http://{url_host(self.app_ip)}:{ADMIN_PORT}"


def sidecar_identity(
    service: str,
    version_: str | None,
    labels: tuple[str, ...],
    ip: str,
    app_port: int,
    xds: str,
    local_ip: str | None = None,
    xds_protocol: str = "delta",
    gateway: bool = False,
    locality: str | None = None,
) -> SidecarIdentity:
    """Turn command-line options into an identity; reports bad input as a clean error."""
    if not service:
        raise BadSidecarOption("--service must not be empty")
    mapping = parse_labels(labels)
    if version_ is not None:
        mapping["version"] = version_
    _check_ip(ip, "--ip")
    if local_ip is not None:
        _check_ip(local_ip, "--local-ip")
    if not 0 < app_port < 65536:
        raise BadSidecarOption(f"--app-port {app_port}: must be between 1 and 65535")
    (host, port), *replicas = [parse_host_port(a, option="--xds") for a in xds.split(",")]
    if xds_protocol not in XDS_PROTOCOLS:
        raise BadSidecarOption(
            f"--xds-protocol {xds_protocol!r}: one of {', '.join(XDS_PROTOCOLS)}"
        )
    return SidecarIdentity(
        service,
        ip,
        app_port,
        labels_of(mapping),
        host,
        port,
        local_ip,
        xds_protocol,
        gateway,
        locality_option(locality),
        tuple(replicas),
    )


def locality_option(text: str | None) -> Locality | None:
    """`--locality REGION[/ZONE[/SUBZONE]]`; a bad one is a clean error."""
    if text is None:
        return None
    problem = locality_problem(text)
    if problem is not None:
        raise BadSidecarOption(f"--locality {problem}")
    return Locality.parse(text)


def parse_labels(labels: tuple[str, ...]) -> dict[str, str]:
    """`K=V` strings to a dict; a label without `=`, or with an odd key, is an error."""
    result: dict[str, str] = {}
    for label in labels:
        key, sep, value = label.partition("=")
        if not sep:
            raise BadSidecarOption(f"--label {label!r}: expected K=V, e.g. --label zone=eu")
        if not _LABEL_KEY.match(key):
            raise BadSidecarOption(
                f"--label {label!r}: key must be letters, digits, '.', '_', '-' or '/'"
            )
        if key in result and result[key] != value:
            raise BadSidecarOption(f"--label {key}: given twice with different values")
        result[key] = value
    return result


def parse_host_port(text: str, *, option: str, example: str = "127.0.0.1:18000") -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` to (host, port)."""
    host, sep, port_text = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadSidecarOption(f"{option} {text!r}: expected HOST:PORT, e.g. {example}")
    return host, int(port_text)


def _check_ip(ip: str, option: str) -> None:
    """An address Envoy binds its admin or listeners to."""
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise BadSidecarOption(f"{option} {ip!r}: not an IP address") from None


def url_host(host: str) -> str:
    """A host as written before `:PORT` (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ControlChannel:
    """What a secure sidecar's Envoy needs beyond its identity: the mesh CA the join token pins
    (PEM, checked by the agent), the token, and where the agent serves SDS."""

    ca_pem: str
    token: str
    sds_socket: str


def render_bootstrap(identity: SidecarIdentity, channel: ControlChannel | None = None) -> str:
    """The bootstrap as YAML text, keys in a readable order."""
    return yaml.safe_dump(bootstrap(identity, channel), sort_keys=False)


def bootstrap(identity: SidecarIdentity, channel: ControlChannel | None = None) -> dict[str, Any]:
    """The whole bootstrap as a plain dict (what `render_bootstrap` dumps); plaintext to the
    control plane without a `channel` (`serve --insecure`)."""
    clusters = [xds_cluster(identity)]
    dynamic = dynamic_resources(identity.xds_protocol)
    if channel is not None:
        clusters = [secure_xds_cluster(identity, channel), sds_cluster(channel.sds_socket)]
        grpc_service = dynamic["ads_config"]["grpc_services"][0]
        grpc_service["initial_metadata"] = [
            {"key": "authorization", "value": f"Bearer {channel.token}"}
        ]
    return {
        "node": node(identity),
        "admin": admin(identity),
        "dynamic_resources": dynamic,
        "static_resources": {"clusters": clusters},
        "overload_manager": overload_manager(),
    }


def node(identity: SidecarIdentity) -> dict[str, Any]:
    """Node id `service~ip`; metadata is what the control plane registers the instance by."""
    metadata: dict[str, Any] = {
        "service": identity.service,
        "ip": identity.ip,
        "app_port": identity.app_port,
        "labels": dict(identity.labels),
    }
    if identity.local_ip is not None:
        metadata["local_ip"] = identity.local_ip
    if identity.gateway:
        metadata["gateway"] = True
    found = {"id": identity.node_id, "cluster": identity.service, "metadata": metadata}
    if identity.locality is not None:
        found["locality"] = node_locality(identity.locality)
    return found


def node_locality(locality: Locality) -> dict[str, str]:
    """Envoy's (and gRPC's) node.locality: the levels given."""
    levels = {"region": locality.region, "zone": locality.zone, "sub_zone": locality.subzone}
    return {key: value for key, value in levels.items() if value}


def admin(identity: SidecarIdentity) -> dict[str, Any]:
    """Admin on the instance's app IP, so every sidecar on one host has its own `IP:15000`,
    and only the app's network namespace reaches it when that IP is local (`--local-ip`)."""
    return {"address": socket_address(identity.app_ip, ADMIN_PORT)}


def socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def dynamic_resources(protocol: str = "delta") -> dict[str, Any]:
    """Everything over one ADS stream; Envoy waits for the control plane before going LIVE."""
    return {
        "ads_config": ads_config(protocol),
        "cds_config": ads_config_source(),
        "lds_config": ads_config_source(),
    }


def ads_config_source() -> dict[str, Any]:
    """A fresh dict each time: shared objects would be dumped as YAML anchors."""
    # 0s disables the initial fetch timeout, so LIVE means "configured by the control plane".
    return {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}


def ads_config(protocol: str = "delta") -> dict[str, Any]:
    """gRPC ADS to `xds_cluster` with a short reconnect backoff (`envoy_grpc.retry_policy`):
    incremental (DELTA_GRPC: a change sends only what changed) or state of the world."""
    return {
        "api_type": XDS_PROTOCOLS[protocol],
        "transport_api_version": "V3",
        "set_node_on_first_message_only": True,
        "grpc_services": [
            {
                "envoy_grpc": {
                    "cluster_name": XDS_CLUSTER,
                    "retry_policy": {
                        "retry_back_off": {
                            "base_interval": RETRY_BASE_INTERVAL,
                            "max_interval": RETRY_MAX_INTERVAL,
                        }
                    },
                }
            }
        ],
    }


def xds_cluster(identity: SidecarIdentity) -> dict[str, Any]:
    """The control plane (every replica an endpoint): HTTP/2 with keepalives so a dead peer is
    noticed, fast connect."""
    addresses = identity.xds_addresses
    endpoints = [{"endpoint": {"address": socket_address(h, p)}} for h, p in addresses]
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC" if all(_is_ip(h) for h, _ in addresses) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: http2_options()},
        "upstream_connection_options": {
            "tcp_keepalive": {"keepalive_probes": 3, "keepalive_time": 30, "keepalive_interval": 5}
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": endpoints}],
        },
    }


def secure_xds_cluster(identity: SidecarIdentity, channel: ControlChannel) -> dict[str, Any]:
    """`xds_cluster` over TLS: only the pinned CA is trusted, and the certificate must name the
    host sidecars dial; connections leave from the instance IP."""
    host = identity.xds_host
    names = [
        {"san_type": "IP_ADDRESS" if _is_ip(h) else "DNS", "matcher": {"exact": h}}
        for h, _ in identity.xds_addresses
    ]
    tls: dict[str, Any] = {
        "@type": f"type.googleapis.com/{UPSTREAM_TLS}",
        "common_tls_context": {
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"inline_string": channel.ca_pem},
                "match_typed_subject_alt_names": names,
            },
        },
    }
    if not _is_ip(host):
        tls["sni"] = host
    return {
        **xds_cluster(identity),
        "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": tls},
        "upstream_bind_config": {"source_address": {"address": identity.ip, "port_value": 0}},
    }


def sds_cluster(socket_path: str) -> dict[str, Any]:
    """The agent's SDS server, on a unix socket of this instance."""
    return {
        "name": SDS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {HTTP_PROTOCOL_OPTIONS: http2_options()},
        "load_assignment": {
            "cluster_name": SDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": socket_path}}}}]}
            ],
        },
    }


def overload_manager() -> dict[str, Any]:
    """A generous downstream connection cap; without one Envoy 1.40 warns at every start."""
    return {
        "resource_monitors": [
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": {
                    "@type": f"type.googleapis.com/{DOWNSTREAM_CONNECTIONS}",
                    "max_active_downstream_connections": MAX_DOWNSTREAM_CONNECTIONS,
                },
            }
        ]
    }


def http2_options() -> dict[str, Any]:
    return {
        "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
        "explicit_http_config": {
            "http2_protocol_options": {
                "connection_keepalive": {"interval": "30s", "timeout": "5s"},
            }
        },
    }
