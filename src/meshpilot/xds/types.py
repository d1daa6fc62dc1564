"""The one table of xDS resource types meshpilot serves, and everything that differs between them.

The translator, the snapshot's consistency check, the streams (push order, subscriptions,
make-before-break), the admin API, `status` and `render` all read this table: a new type (Secret,
next) is a row here plus its builder.
"""

from __future__ import annotations

from dataclasses import dataclass

_PREFIX = "type.googleapis.com/"
CLUSTER = _PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = _PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = _PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = _PREFIX + "envoy.config.route.v3.RouteConfiguration"
SCOPED_ROUTE = _PREFIX + "envoy.config.route.v3.ScopedRouteConfiguration"


@dataclass(frozen=True)
class ResourceType:
    """One xDS resource type and how it is served."""

    url: str
    short: str  # the name users see: `status` columns, `render --type`, metric labels
    # Types its resources name (a cluster its EDS assignment, a listener its route table): a
    # proxy's view must contain them, and they are pushed first.
    refers_to: tuple[str, ...] = ()
    # Subscribed to as a whole (Envoy's CDS and LDS); otherwise by resource name.
    wildcard: bool = False
    # Proxies asking for the same names share one set and one response (nonce included);
    # otherwise a proxy's set includes resources of its own.
    shared: bool = False
    # Pushed only once everything it refers to is ACKed (make-before-break).
    gated: bool = False
    # A resource still referred to by what the proxy has is kept until that is replaced.
    kept_while_used: bool = False
    # Asked for by sidecars only: gRPC's proxyless client routes by API listener.
    sidecar_only: bool = False


# In push order: clusters before the endpoints that fill them, listeners before the route scopes
# and routes they load, so a proxy is never sent a reference to something it lacks. A sidecar's
# outbound listener loads a route table per service it may call, through a scope per Host (SRDS):
# an edit of one service resends that service's table alone.
TYPES = (
    ResourceType(CLUSTER, "cds", refers_to=(ENDPOINT,), wildcard=True, kept_while_used=True),
    ResourceType(ENDPOINT, "eds", shared=True, kept_while_used=True),
    ResourceType(LISTENER, "lds", refers_to=(ROUTE, CLUSTER), wildcard=True, gated=True),
    ResourceType(
        SCOPED_ROUTE, "srds", refers_to=(ROUTE,), wildcard=True, shared=True, sidecar_only=True
    ),
    ResourceType(ROUTE, "rds", refers_to=(CLUSTER,), shared=True, gated=True),
)
BY_URL = {t.url: t for t in TYPES}
BY_SHORT = {t.short: t for t in TYPES}
PUSH_ORDER = tuple(t.url for t in TYPES)


def served_types(proxyless: bool) -> tuple[str, ...]:
    """The types a proxy is served (and `/proxies` reports), in push order."""
    return tuple(t.url for t in TYPES if not (proxyless and t.sidecar_only))


def short_name(type_url: str) -> str:
    return BY_URL[type_url].short


def referrers(type_url: str) -> tuple[str, ...]:
    """The types whose resources may refer to one of `type_url`."""
    return tuple(t.url for t in TYPES if type_url in t.refers_to)
