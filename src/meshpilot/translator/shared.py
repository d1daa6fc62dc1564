"""What proxies share after one change: the sets of clusters, endpoints and routes of the
services they call (all of them, or an `egress:` list), and what their listeners need from the
mesh. Each set is built once per change and given, as the same object, to every proxy."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from meshpilot.model import ir, proxies
from meshpilot.model.locality import Locality
from meshpilot.translator.resources import Part, ResourceSet
from meshpilot.translator.services import CallerTables, ServiceEntry, ServiceOutput, ServiceParts
from meshpilot.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SCOPED_ROUTE

CallerKey = tuple[tuple[str, ...] | None, Locality]


@dataclass(frozen=True)
class ApiSets:
    """What a proxyless gRPC client has instead of listeners of its own and the outbound route
    table: an API listener and a route table per service it may call."""

    listeners: ResourceSet
    routes: ResourceSet


@dataclass(frozen=True)
class Outbound:
    """What a proxy needs to call services: their clusters, endpoints, route tables and the
    scopes that pick a table by Host (and the services' own outputs, for `api`)."""

    clusters: ResourceSet
    endpoints: ResourceSet
    routes: ResourceSet
    scopes: ResourceSet
    outputs: tuple[ServiceOutput, ...] = field(default=(), repr=False, compare=False)
    # The services' parts, in the order of the sets' parts (for `localized`).
    services: tuple[ServiceParts, ...] = field(default=(), repr=False, compare=False)
    # The services whose routes match callers, by their place in `outputs` (and in
    # `routes.parts`): found when the outputs are, kept when only endpoints change.
    caller_tables: tuple[tuple[int, CallerTables], ...] = field(
        default=(), repr=False, compare=False
    )

    @functools.cached_property
    def by_caller(self) -> bool:
        """Whether a caller's locality changes any of these services' endpoints."""
        return any(s.by_caller is not None for s in self.services)

    @functools.cached_property
    def api(self) -> ApiSets:
        """Built when a proxyless client first needs it, once per set of services."""
        found = [o.api for o in self.outputs if o.api is not None]
        return ApiSets(
            ResourceSet(LISTENER, [a.listener for a in found]),
            ResourceSet(ROUTE, [a.route for a in found]),
        )


def outbound(
    services: Sequence[ServiceParts],
    shared_clusters: Sequence[Part],
    previous: Outbound | None = None,
) -> Outbound:
    """Sets for these services, plus clusters every proxy has (the mixer's).

    A set made of the same parts as in `previous` (the same objects: a proxy joining changes
    only its service's endpoints) is `previous`'s: proxies keep the very sets they have, with
    their bytes, versions and every answer derived from them.
    """
    outputs = tuple(s.output for s in services)
    cluster_parts = [*(o.clusters for o in outputs), *shared_clusters]
    endpoint_parts = [s.endpoints for s in services]
    if previous is not None:
        clusters = _reused(CLUSTER, cluster_parts, previous.clusters)
        endpoints = _reused(ENDPOINT, endpoint_parts, previous.endpoints)
        if clusters is previous.clusters:  # the same services (each owns its parts)
            if endpoints is previous.endpoints:
                return previous
            return dataclasses.replace(previous, endpoints=endpoints, services=tuple(services))
        routes = _reused(ROUTE, [o.route for o in outputs], previous.routes)
        scopes = _reused(SCOPED_ROUTE, [o.scopes for o in outputs], previous.scopes)
    else:
        clusters, endpoints = (
            ResourceSet(CLUSTER, cluster_parts),
            ResourceSet(ENDPOINT, endpoint_parts),
        )
        routes = ResourceSet(ROUTE, [o.route for o in outputs])
        scopes = ResourceSet(SCOPED_ROUTE, [o.scopes for o in outputs])
    callers = tuple((i, o.callers) for i, o in enumerate(outputs) if o.callers is not None)
    return Outbound(clusters, endpoints, routes, scopes, outputs, tuple(services), callers)


def _shared_sets(calls: Outbound) -> tuple[ResourceSet, ...]:
    return (calls.clusters, calls.routes, calls.scopes)


def localized(calls: Outbound, caller: Locality, previous: Outbound | None) -> Outbound:
    """`calls` with the endpoints a caller in `caller` sees; `previous` (this caller locality's
    last) when that is what it would be, so its proxies keep their views."""
    parts = [s.endpoints_for(caller) for s in calls.services]
    if previous is None:
        return dataclasses.replace(calls, endpoints=ResourceSet(ENDPOINT, parts))
    endpoints = _reused(ENDPOINT, parts, previous.endpoints)
    same = all(map(operator.is_, _shared_sets(previous), _shared_sets(calls)))
    if endpoints is previous.endpoints and same:
        return previous
    return dataclasses.replace(calls, endpoints=endpoints)


def _with_tables(calls: Outbound, applying: Mapping[int, frozenset[str]]) -> Outbound:
    """`calls` with, for the services at these places, the table of the routes that apply."""
    parts = list(calls.routes.parts)
    for i, tables in calls.caller_tables:
        if i in applying:
            parts[i] = tables.table(applying[i])
    return dataclasses.replace(calls, routes=ResourceSet(ROUTE, parts))


def _reused(type_url: str, parts: list[Part], previous: ResourceSet) -> ResourceSet:
    """`previous` when it is made of exactly these parts (the same objects), else a new set."""
    same = len(previous.parts) == len(parts) and all(map(operator.is_, previous.parts, parts))
    return previous if same else ResourceSet(type_url, parts)


@dataclass(frozen=True)
class ProxyPolicy:
    """What a proxy's listeners need from the mesh besides its own service: the policies its
    sidecar enforces, where the mixer is, and what to log and trace."""

    policies: tuple[ir.Policy, ...] = ()
    mixer: ir.Mixer | None = None
    telemetry: ir.Telemetry = field(default_factory=ir.Telemetry)
    trust_domain: str | None = None  # None: no workload identity, plaintext inbound

    @property
    def access_log(self) -> bool:
        return self.telemetry.access_log and self.mixer is not None

    def sampling(self, service: ir.Service | None) -> float | None:
        if service is not None and service.tracing_sampling is not None:
            return service.tracing_sampling
        return self.telemetry.sampling


# A set (by id) and, per service (by its place in the set) whose routes match callers, those
# that apply: proxies that make the same choice share one set (`for_caller`).
CallerChoice = tuple[int, tuple[tuple[int, frozenset[str]], ...]]


@dataclass(frozen=True)
class MeshResources:
    """The part of the configuration that all proxies share after one change, and all that a
    proxy's view is assembled from besides the proxy itself."""

    full: Outbound  # every service, for proxies whose service has no `egress:`
    # The tcp services a proxy may call: each gets a listener of its own on the proxy's IP.
    tcp_services: tuple[ir.Service, ...] = ()
    # The HTTP services with an `outbound_port`: each gets a listener on the proxy's app IP.
    port_services: tuple[ir.Service, ...] = ()
    gateways: Mapping[str, ir.Gateway] = field(default_factory=dict)  # by name
    policies: Mapping[str, tuple[ir.Policy, ...]] = field(default_factory=dict)
    mixer: ir.Mixer | None = None
    telemetry: ir.Telemetry = field(default_factory=ir.Telemetry)
    trust_domain: str | None = None
    # What scoped views (`egress:`) are assembled from, the previous change's (reused where
    # unchanged, see `outbound`) and the ones made so far.
    services: tuple[ServiceParts, ...] = ()
    shared_clusters: tuple[Part, ...] = ()
    previous_scoped: Mapping[tuple[str, ...], Outbound] = field(default_factory=dict)
    # Views of callers with a locality, by (egress, locality): the previous change's, this one's.
    previous_localized: Mapping[CallerKey, Outbound] = field(default_factory=dict)
    # Each service's entry by name: a proxy's own service is the entry's (the same object
    # while the service is unchanged, so a proxy's cached resources are found by identity).
    entries: Mapping[str, ServiceEntry] = field(default_factory=dict, compare=False)
    _scoped: dict[tuple[str, ...], Outbound] = field(default_factory=dict, compare=False)
    _localized: dict[CallerKey, Outbound] = field(default_factory=dict, compare=False)
    _policies: dict[str, ProxyPolicy] = field(default_factory=dict, compare=False)
    # The sets of sidecars that services' caller-matched routes apply to (see `for_caller`),
    # the previous change's and this one's, by the set they vary and which routes apply.
    previous_callers: Mapping[CallerChoice, tuple[Outbound, Outbound]] = field(default_factory=dict)
    _callers: dict[CallerChoice, tuple[Outbound, Outbound]] = field(
        default_factory=dict, compare=False
    )

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.services)}

    def scoped(self, egress: tuple[str, ...]) -> Outbound:
        """The clusters, endpoints and routes of just these services (built once per change for
        each distinct egress list, shared by every proxy that has it)."""
        found = self._scoped.get(egress)
        if found is None:
            positions = self._positions
            chosen = sorted(positions[name] for name in egress if name in positions)
            parts = [self.services[i] for i in chosen]
            previous = self.previous_scoped.get(egress)
            found = self._scoped[egress] = outbound(parts, self.shared_clusters, previous)
        return found

    def calls(self, egress: tuple[str, ...] | None, caller: Locality | None) -> Outbound:
        """What a proxy calling these services (None: all) from `caller` needs: the shared
        sets unless its locality changes some service's endpoints (built once per change for
        each egress list and locality, shared by every proxy that has both)."""
        calls = self.scoped(egress) if egress is not None else self.full
        if caller is None or not calls.by_caller:
            return calls
        key = (egress, caller)
        found = self._localized.get(key)
        if found is None:
            previous = self.previous_localized.get(key)
            found = self._localized[key] = localized(calls, caller, previous)
        return found

    def for_caller(self, calls: Outbound, proxy: proxies.Proxy) -> Outbound:
        """`calls` as `proxy` should have it: for each service whose routes match callers, the
        table holding those that apply to it. Made once per change for each distinct choice,
        shared by the proxies that make it, and the previous change's while `calls` is the same
        set (its services' tables are then the same), so that their views are reused."""
        choice = tuple(
            (i, applying)
            for i, tables in calls.caller_tables
            if (applying := tables.applying(proxy))
        )
        if not choice:
            return calls
        key = (id(calls), choice)  # `calls` is kept alive by the entry: no id is reused
        found = self._callers.get(key) or self.previous_callers.get(key)
        if found is None or found[0] is not calls:
            found = (calls, _with_tables(calls, dict(choice)))
        self._callers[key] = found
        return found[1]

    def proxy_policy(self, service: str) -> ProxyPolicy:
        """One object per service and change, so a proxy's cached inputs compare by identity."""
        found = self._policies.get(service)
        if found is None:
            policies = self.policies.get(service, ())
            found = self._policies[service] = ProxyPolicy(
                policies, self.mixer, self.telemetry, self.trust_domain
            )
        return found

    def own_service(self, name: str) -> ir.Service | None:
        """The service named so as first translated (None: not in the mesh)."""
        entry = self.entries.get(name)
        return entry.service if entry is not None else None
