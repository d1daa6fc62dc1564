"""Who is connecting: the proxy described by a node (id and metadata from the bootstrap): an
Envoy sidecar, a gateway (metadata `gateway: true`, its name as the service) or a proxyless gRPC
client (metadata `proxyless: true`)."""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import base_pb2
from google.protobuf import json_format

from meshpilot.errors import MeshpilotError
from meshpilot.model import ir, proxies
from meshpilot.model.locality import Locality, locality_problem


class BadNode(MeshpilotError):
    """The node in a discovery request does not describe a mesh proxy."""


def proxy_from_node(node: base_pb2.Node) -> proxies.Proxy:
    if not node.id:
        raise BadNode("the first discovery request carries no node id")
    metadata = json_format.MessageToDict(node.metadata)
    service = metadata.get("service") or node.cluster
    ip = metadata.get("ip")
    app_port = metadata.get("app_port", 8080)
    labels = metadata.get("labels", {})
    local_ip = metadata.get("local_ip")
    proxyless = metadata.get("proxyless", False)
    gateway = metadata.get("gateway", False)
    if not isinstance(service, str) or not service:
        raise BadNode(f"node {node.id!r}: metadata.service (or node.cluster) is required")
    if not isinstance(ip, str) or not ip:
        raise BadNode(f"node {node.id!r}: metadata.ip is required")
    if not _is_ip(ip):
        # An endpoint address Envoy cannot parse makes every sidecar reject the whole EDS update.
        raise BadNode(f"node {node.id!r}: metadata.ip {ip!r} is not an IP address")
    if local_ip is not None and not (isinstance(local_ip, str) and _is_ip(local_ip)):
        raise BadNode(f"node {node.id!r}: metadata.local_ip {local_ip!r} is not an IP address")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise BadNode(f"node {node.id!r}: metadata.labels must map names to strings")
    if not isinstance(app_port, int | float) or not 0 < int(app_port) < 65536:
        raise BadNode(f"node {node.id!r}: metadata.app_port must be a port number")
    for key, flag in (("proxyless", proxyless), ("gateway", gateway)):
        if not isinstance(flag, bool):
            raise BadNode(f"node {node.id!r}: metadata.{key} must be true or false")
    return proxies.Proxy(
        node.id,
        service,
        ip,
        int(app_port),
        ir.labels_of(labels),
        local_ip,
        proxyless,
        gateway,
        _locality(node),
    )


def _locality(node: base_pb2.Node) -> Locality | None:
    """node.locality, as the sidecar's `--locality` set it (None: not given)."""
    where = node.locality
    levels = (where.region, where.zone, where.sub_zone)
    if not any(levels):
        return None
    text = "/".join(levels).rstrip("/")
    problem = locality_problem(text)
    if problem is not None:
        raise BadNode(f"node {node.id!r}: locality {problem}")
    return Locality.parse(text)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
