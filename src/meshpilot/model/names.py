"""Every Envoy resource name meshpilot generates is made here, so names stay consistent."""

from __future__ import annotations

INBOUND_LISTENER = "inbound"
OUTBOUND_LISTENER = "outbound"
# The outbound listener picks a route table per request by its Host (scoped routes, SRDS).
OUTBOUND_SCOPES = "outbound"
INBOUND_ROUTE = "inbound"
MIXER_CLUSTER = "mixer"
# Workload identity (Istio's names): the sidecar's agent serves Envoy its certificate and key as
# the SDS secret WORKLOAD_SECRET and the mesh's trust anchor as ROOT_SECRET, over a unix socket
# that the bootstrap's static cluster SDS_CLUSTER reaches.
SDS_CLUSTER = "sds-grpc"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
# The mixer is a workload of the mesh too: its certificate names this service, which a mesh file
# cannot declare.
MIXER_SERVICE = "meshpilot-mixer"
# Global rate limits: the domain sidecars send to the mixer's rate-limit service, and the keys of
# the descriptor entries that name the limit (the service, and the route that has its own).
RATE_LIMIT_DOMAIN = "meshpilot"
RATE_LIMIT_SERVICE_KEY = "service"
RATE_LIMIT_ROUTE_KEY = "route"
# Stats and dynamic-metadata keys of audit policies (Envoy RBAC shadow rules) start with this.
AUDIT_PREFIX = "audit."
# A verified JWT's payload is dynamic metadata of the jwt_authn filter under this key: what
# RBAC matches principals and claims on, and what the mixer's hooks see (`request.claims`).
JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "payload"


def collector_cluster(protocol: str) -> str:
    """Where every sidecar sends its trace spans: `zipkin` (Istio's name for its Zipkin cluster)
    or `opentelemetry`."""
    return protocol


def outbound_cluster(service: str, port: int, subset: str | None = None) -> str:
    """Istio-style `outbound|PORT|SUBSET|SERVICE`; SUBSET empty for the whole service."""
    return f"outbound|{port}|{subset or ''}|{service}"


def inbound_cluster(app_port: int) -> str:
    return f"inbound|{app_port}||"


def virtual_host(service: str) -> str:
    return service


def outbound_route(service: str) -> str:
    """A service's outbound route table: sidecars load one per service they may call."""
    return f"outbound|{service}"


def route_scope(host: str) -> str:
    """The scope that sends requests for HOST (the Host header without a port) to a route
    table: for a service's own name it is named like that service's table."""
    return f"outbound|{host}"


def unnamed_route(index: int) -> str:
    """The name of a route given without one: `route-INDEX`, its 0-based place in `routes:`
    (deterministic, and unique in its service: the file is refused where it would not be)."""
    return f"route-{index}"


def route(service: str, route_name: str) -> str:
    return f"{service}/{route_name}"


def api_listener(service: str, port: int) -> str:
    """A proxyless gRPC client's listener for `xds:///SERVICE:PORT` (gRPC asks for the target's
    authority by name), and the name of that listener's route table."""
    return f"{service}:{port}"


def tcp_listener(service: str, port: int) -> str:
    """A caller's outbound listener for a tcp service, on the caller's IP at the service's port."""
    return f"outbound_tcp|{port}|{service}"


def http_port_listener(service: str, port: int) -> str:
    """A caller's listener for an HTTP service by port (`outbound_port`), whatever the Host."""
    return f"outbound_http|{port}|{service}"


def gateway_listener(gateway: str) -> str:
    """A gateway's listener at the address the mesh gives it."""
    return f"gateway|{gateway}"


def gateway_route(gateway: str) -> str:
    """A gateway's route table: a virtual host per Host it answers to."""
    return f"gateway|{gateway}"


def rate_limit_stat_prefix(route_name: str | None = None) -> str:
    """Stats of the inbound token bucket: the service's, or a route's own (`..._ROUTE`)."""
    if route_name is None:
        return "inbound_rate_limit"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in route_name)
    return f"inbound_rate_limit_{safe}"
