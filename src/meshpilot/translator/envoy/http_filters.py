"""HTTP filters as plug-ins with one explicit order.

`ORDER` is the only place that says which HTTP filters exist and where each runs, so a filter
added later cannot be misordered: a new filter is a module defining an `HttpFilter` (see
`filter_plugin`) and one row here. The listener and route builders ask this table, never a
filter by name.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import any_pb2

from meshpilot.model import ir
from meshpilot.translator.envoy import (
    cors,
    ext_authz,
    fault,
    global_rate_limit,
    jwt_authn,
    rate_limit,
    rbac,
    router,
)
from meshpilot.translator.envoy.common import typed
from meshpilot.translator.envoy.filter_plugin import Chain, FilterContext, HttpFilter
from meshpilot.translator.envoy.route import PerRoute

# Tokens are verified first, so that every policy can match the verified payload. Policies run
# in the contract's order: audits see every request; a custom policy's hook
# decides before static deny and allow policies; rate limits count only admitted requests, the
# local bucket first so that a request it refuses costs no call to the mixer. CORS answers a
# preflight before a fault could abort it.
ORDER: tuple[HttpFilter, ...] = (
    jwt_authn.FILTER,
    rbac.AUDIT,
    ext_authz.FILTER,
    rbac.DENY,
    rbac.ALLOW,
    rate_limit.FILTER,
    global_rate_limit.FILTER,
    cors.FILTER,
    fault.FILTER,
    router.FILTER,
)


def http_filters(chain: Chain, context: FilterContext) -> tuple[list[hcm.HttpFilter], list[str]]:
    """The filters of this chain that have a config in this context, in the table's order (the
    router last), and the clusters their configs call."""
    chosen: list[hcm.HttpFilter] = []
    clusters: list[str] = []
    for plugin in ORDER:
        if chain in plugin.chains:
            config = plugin.config(context)
            if config is not None:
                chosen.append(
                    hcm.HttpFilter(
                        name=plugin.name, typed_config=typed(config), is_optional=plugin.optional
                    )
                )
                clusters.extend(plugin.clusters(context))
    return chosen, clusters


def per_route(chain: Chain) -> PerRoute:
    """What the chain's filters configure on one route: `typed_per_filter_config` entries."""
    hooks = [
        (plugin.name, plugin.per_route)
        for plugin in ORDER
        if chain in plugin.chains and plugin.per_route is not None
    ]

    def configs(service: ir.Service, route: ir.Route) -> dict[str, any_pb2.Any]:
        found = {}
        for name, hook in hooks:
            config = hook(service, route)
            if config is not None:
                found[name] = typed(config)
        return found

    return configs


INBOUND_ROUTES = per_route("inbound")
OUTBOUND_ROUTES = per_route("outbound")


def filter_names(chain: Chain) -> Sequence[str]:
    """The chain's filters by name, in order (for documentation and tests)."""
    return [plugin.name for plugin in ORDER if chain in plugin.chains]
