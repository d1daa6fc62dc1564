"""HTTP filters as plug-ins with one explicit order.

A filter chain is assembled by name; the table below is the only place that decides where each
filter runs, so features added later (ext_authz, RBAC, rate limit, fault) cannot be misordered.
"""

from __future__ import annotations

from collections.abc import Mapping

from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf.message import Message

from meshpilot.translator.envoy.common import typed

SOURCE_IDENTITY = "envoy.filters.http.header_mutation"
RBAC_AUDIT = "envoy.filters.http.rbac.audit"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
RBAC_DENY = "envoy.filters.http.rbac.deny"
RBAC_ALLOW = "envoy.filters.http.rbac.allow"
LOCAL_RATE_LIMIT = "envoy.filters.http.local_ratelimit"
FAULT = "envoy.filters.http.fault"
ROUTER = "envoy.filters.http.router"

# Policies run in the contract's order: audits see every request; a custom policy's hook
# decides before static deny and allow policies; rate limits count only admitted requests.
ORDER = (
    SOURCE_IDENTITY,
    RBAC_AUDIT,
    EXT_AUTHZ,
    RBAC_DENY,
    RBAC_ALLOW,
    LOCAL_RATE_LIMIT,
    FAULT,
    ROUTER,
)


def http_filters(configs: Mapping[str, Message]) -> list[hcm.HttpFilter]:
    """The given filters in their fixed order, always ending with the router."""
    unknown = set(configs) - set(ORDER)
    if unknown:
        raise ValueError(f"HTTP filters without a place in the order table: {sorted(unknown)}")
    chosen = {**configs, ROUTER: configs.get(ROUTER, router_pb2.Router())}
    return [
        hcm.HttpFilter(name=name, typed_config=typed(chosen[name]))
        for name in ORDER
        if name in chosen
    ]
