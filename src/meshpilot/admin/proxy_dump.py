"""One proxy's configuration, from either side: what the control plane sent it (admin API
`/config_dump?node=`) or what its Envoy has (Envoy admin `/config_dump`), in one canonical form.

Both are brought to Envoy's config-dump JSON (proto field names, `@type`) by a round trip
through the protos, so the two sources compare key for key: the admin API speaks proto3 JSON
(camelCase), Envoy keeps proto field names, and the envelopes (`version_info`, `last_updated`,
warming and draining states) are dropped."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from meshpilot.admin.client import ADMIN_API, Endpoint, get_json
from meshpilot.errors import MeshpilotError
from meshpilot.identity.sds import SECRET_TYPE
from meshpilot.model.proxies import ADMIN_PORT
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE

ENVOY_ADMIN = Endpoint("the sidecar's Envoy admin", "--envoy-admin", f"127.0.0.1:{ADMIN_PORT}")
_ADMIN_DUMP = "type.googleapis.com/envoy.admin.v3."

Resource = dict[str, Any]
# Kind (`--type` word) -> resources in canonical form, each list sorted by resource name.
ProxyConfig = dict[str, list[Resource]]


@dataclass(frozen=True)
class Kind:
    """A kind of resource as `proxy-config --type` names it, and where Envoy's dump keeps it."""

    name: str
    type_url: str
    name_field: str  # the field that names a resource of this kind
    dump: str  # the envoy.admin.v3 message of Envoy's /config_dump holding them
    entries: str  # that message's list of dynamic (xDS-delivered) entries
    unwrap: Callable[[dict[str, Any]], list[Resource]]  # one entry -> its active resources

    def resource_name(self, resource: Resource) -> str:
        return str(resource.get(self.name_field, ""))


def _field(name: str) -> Callable[[dict[str, Any]], list[Resource]]:
    return lambda entry: [entry[name]] if name in entry else []


def _active_listener(entry: dict[str, Any]) -> list[Resource]:
    """The listener that serves: a warming or draining one is not in force (yet, any more)."""
    return [entry["active_state"]["listener"]] if "active_state" in entry else []


KINDS = (
    Kind("cluster", CLUSTER, "name", "ClustersConfigDump", "dynamic_active_clusters",
         _field("cluster")),
    Kind("listener", LISTENER, "name", "ListenersConfigDump", "dynamic_listeners",
         _active_listener),
    Kind("route", ROUTE, "name", "RoutesConfigDump", "dynamic_route_configs",
         _field("route_config")),
    Kind("scoped-route", SCOPED_ROUTE, "name", "ScopedRoutesConfigDump",
         "dynamic_scoped_route_configs", lambda entry: list(entry.get("scoped_route_configs", []))),
    Kind("endpoint", ENDPOINT, "cluster_name", "EndpointsConfigDump", "dynamic_endpoint_configs",
         _field("endpoint_config")),
    Kind("secret", SECRET_TYPE, "name", "SecretsConfigDump", "dynamic_active_secrets",
         _field("secret")),
)  # fmt: skip
BY_NAME = {kind.name: kind for kind in KINDS}
BY_URL = {kind.type_url: kind for kind in KINDS}


def canonical(resource: Resource) -> Resource:
    """The resource as Envoy dumps it (proto field names, `@type`), whichever JSON form it
    came in; a type the protos here do not know is kept as it is."""
    from google.protobuf import json_format
    from google.protobuf.any_pb2 import Any as AnyProto

    _load_envoy_types()
    try:
        holder = json_format.ParseDict(resource, AnyProto(), ignore_unknown_fields=True)
    except json_format.ParseError:
        return resource
    # Plain dicts (protobuf gives OrderedDicts, whose equality would depend on key order).
    result: Resource = json.loads(
        json_format.MessageToJson(holder, preserving_proto_field_name=True)
    )
    return result


def _load_envoy_types() -> None:
    """Register every message meshpilot's resources may carry (filters inside `Any`s too)."""
    import envoy.extensions.transport_sockets.tls.v3.secret_pb2  # noqa: F401

    import meshpilot.translator.translate  # noqa: F401


def _sorted(kind: Kind, resources: list[Resource]) -> list[Resource]:
    return sorted(map(canonical, resources), key=kind.resource_name)


@dataclass(frozen=True)
class Node:
    """A connected proxy as `/proxies` reports it."""

    node_id: str
    service: str
    ip: str
    proxyless: bool
    # Per type not SYNCED: `KIND STATUS[: error]` (a NACK explains a difference).
    unsynced: tuple[str, ...] = ()

    @property
    def envoy_admin(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{ADMIN_PORT}"


def find_node(admin: str, node: str, token: str | None) -> Node:
    """The connected proxy named NODE (its node id, or its IP when one proxy has it)."""
    proxies = get_json(ADMIN_API, admin, "/proxies", token=token)
    found = [p for p in proxies if p["node_id"] == node] or [p for p in proxies if p["ip"] == node]
    if not found:
        raise MeshpilotError(_unknown_node(node, sorted(p["node_id"] for p in proxies)))
    if len(found) > 1:
        several = ", ".join(sorted(p["node_id"] for p in found))
        raise MeshpilotError(f"{node} is the IP of several proxies ({several}): give a node id")
    proxy = found[0]
    unsynced = tuple(
        f"{BY_URL[url].name} {state['status']}" + (f": {state['error']}" if state["error"] else "")
        for url, state in proxy["types"].items()
        if state["status"] != "SYNCED"
    )
    return Node(
        proxy["node_id"], proxy["service"], proxy["ip"], proxy.get("proxyless", False), unsynced
    )


def _unknown_node(node: str, connected: list[str]) -> str:
    if not connected:
        return f"no proxy {node!r}: no proxies connected"
    return f"no proxy {node!r}; connected: {', '.join(connected)}"


def control_plane_config(admin: str, node: Node, token: str | None) -> ProxyConfig:
    """What the control plane last sent the proxy (including a version it NACKed)."""
    dump = get_json(ADMIN_API, admin, "/config_dump", query={"node": node.node_id}, token=token)
    return sent_config({type_url: sent["resources"] for type_url, sent in dump.items()})


def sent_config(by_type_url: dict[str, list[Resource]]) -> ProxyConfig:
    """Resources as the control plane sends them (proto3 JSON per type URL), canonical; every
    kind it serves is listed, an empty one too."""
    config: ProxyConfig = {kind.name: [] for kind in KINDS if kind.type_url != SECRET_TYPE}
    for type_url, resources in by_type_url.items():
        kind = BY_URL[type_url]
        config[kind.name] = _sorted(kind, resources)
    return config


def sidecar_config(envoy_admin: str, node_id: str) -> ProxyConfig:
    """What the Envoy at `envoy_admin` has in force: its dynamic, active resources."""
    dump = get_json(ENVOY_ADMIN, envoy_admin, "/config_dump", query={"include_eds": ""})
    sections = {c["@type"].removeprefix(_ADMIN_DUMP): c for c in dump.get("configs", [])}
    dumped_id = sections.get("BootstrapConfigDump", {}).get("bootstrap", {}).get("node", {})
    if dumped_id.get("id", node_id) != node_id:
        raise MeshpilotError(
            f"the Envoy at {envoy_admin} is node {dumped_id['id']!r}, not {node_id!r}"
        )
    return {
        kind.name: _sorted(kind, list(_dumped(kind, sections.get(kind.dump, {})))) for kind in KINDS
    }


def _dumped(kind: Kind, section: dict[str, Any]) -> Iterator[Resource]:
    for entry in section.get(kind.entries, []):
        yield from kind.unwrap(entry)


def sidecar_admin(node: Node, envoy_admin: str | None) -> str:
    """Where the node's Envoy admin listens: `--envoy-admin`, else its IP at port 15000."""
    if node.proxyless:
        raise MeshpilotError(
            f"{node.node_id} is a proxyless gRPC client: it has no Envoy admin "
            "(proxy-config --from control-plane shows what it was sent)"
        )
    return envoy_admin or node.envoy_admin


@dataclass(frozen=True)
class ConfigAccess:
    """Where to read a proxy's configuration: the control plane's admin API (and its token),
    and the sidecar's Envoy admin when it is not at the proxy's IP:15000."""

    admin: str
    token: str | None = None
    envoy_admin: str | None = None


def fetch_config(node: str, source: str, access: ConfigAccess) -> ProxyConfig:
    """NODE's configuration from `source` ("control-plane" or "sidecar"). With an
    `envoy_admin` address the sidecar is asked directly, with no control plane."""
    if source == "sidecar" and access.envoy_admin is not None:
        return sidecar_config(access.envoy_admin, node)
    found = find_node(access.admin, node, access.token)
    if source == "sidecar":
        return sidecar_config(sidecar_admin(found, None), found.node_id)
    return control_plane_config(access.admin, found, access.token)
