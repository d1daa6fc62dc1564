"""MeshIR + live instances -> serialized resources, and the view each proxy receives.

The Translator keeps the output of the previous change keyed by input value, so an edit to one
service re-translates and re-serializes only that service; everything else is reused as bytes.
What is built lives elsewhere: per-service parts in `services`, the sets proxies share in
`shared`, a proxy's own resources and view in `proxies`. This module only decides what to reuse.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from meshpilot.gc_pause import gc_paused
from meshpilot.model import ir, proxies
from meshpilot.translator.proxies import ProxyView, View, proxy_view
from meshpilot.translator.resources import Part
from meshpilot.translator.services import (
    ServiceEntry,
    ServiceParts,
    collector_part,
    mixer_part,
)
from meshpilot.translator.shared import MeshResources, outbound

__all__ = ["MeshResources", "Translator", "View"]


class Translator:
    """Translates whole meshes, reusing the previous change's output for unchanged inputs.

    Consistency is checked where resources are made: a service's routes against its clusters when
    the service is translated, a proxy's listeners against its view when the view is assembled.
    """

    def __init__(self) -> None:
        self._services: dict[str, ServiceEntry] = {}
        self._shared_parts: dict[str, tuple[Any, Part]] = {}  # by role: (input, part)
        self._views: dict[proxies.Proxy, ProxyView] = {}
        self._last: MeshResources | None = None
        self._tcp: dict[str, ServiceEntry] = {}  # the tcp services' entries, by name
        self._by_port: dict[str, ServiceEntry] = {}  # those of services with an outbound_port

    def translate(self, mesh: ir.MeshIR, instances: Iterable[proxies.Instance]) -> MeshResources:
        with gc_paused():
            return self._translate(mesh, instances)

    def _translate(self, mesh: ir.MeshIR, instances: Iterable[proxies.Instance]) -> MeshResources:
        by_service: dict[str, list[proxies.Instance]] = defaultdict(list)
        for instance in instances:
            by_service[instance.service].append(instance)
        created: list[ServiceEntry] = []
        self._services = self._entries(mesh, created)
        parts = _service_parts(self._services.values(), by_service)
        shared_clusters = self._shared_clusters(mesh)
        last = self._last
        policies: dict[str, list[ir.Policy]] = defaultdict(list)
        for p in mesh.policies:
            policies[p.service].append(p)
        self._last = MeshResources(
            full=outbound(parts, shared_clusters, last.full if last is not None else None),
            tcp_services=self._tcp_services(created),
            port_services=self._port_services(created),
            gateways={g.name: g for g in mesh.gateways},
            policies={name: tuple(found) for name, found in policies.items()},
            mixer=mesh.mixer,
            telemetry=mesh.telemetry,
            trust_domain=mesh.trust_domain,
            services=tuple(parts),
            shared_clusters=shared_clusters,
            previous_scoped=last._scoped if last is not None else {},
            previous_localized=last._localized if last is not None else {},
            previous_callers=last._callers if last is not None else {},
            entries=self._services,
        )
        return self._last

    def _shared_clusters(self, mesh: ir.MeshIR) -> tuple[Part, ...]:
        """The clusters every sidecar has: the mixer's and the trace collector's, when the mesh
        has them. Each is the previous change's Part while its input is unchanged, so that the
        sets built from it are reused (see `outbound`)."""
        wanted: dict[str, tuple[Any, Callable[[Any], Part]]] = {
            "mixer": (mesh.mixer, mixer_part),
            "collector": (mesh.telemetry.collector, collector_part),
        }
        parts = []
        for role, (source, build) in wanted.items():
            found = self._shared_parts.get(role)
            if source is None:
                self._shared_parts.pop(role, None)
                continue
            if found is None or found[0] != source:
                found = self._shared_parts[role] = (source, build(source))
            parts.append(found[1])
        return tuple(parts)

    def view(self, shared: MeshResources, proxy: proxies.Proxy) -> View:
        """Everything one proxy should have (see `proxy_view`): the proxy's previous view when
        nothing it is made of changed."""
        found = self._views[proxy] = proxy_view(shared, proxy, self._views.get(proxy))
        return found.view

    def _entries(self, mesh: ir.MeshIR, created: list[ServiceEntry]) -> dict[str, ServiceEntry]:
        """Each service's entry: the previous change's for an unchanged service, else a new one
        (noted in `created`). Entries are found by name (a C string hash), and the same IR object
        needs no comparison: an edit of one service of 10,000 costs 10,000 dictionary lookups,
        not 10,000 deep hashes. A plain loop: this is the hot path of every change."""
        previous = self._services
        entries = {}
        for service in mesh.services:
            entry = previous.get(service.name)
            if entry is None or (entry.service is not service and entry.service != service):
                entry = ServiceEntry(service)
                created.append(entry)
            entries[service.name] = entry
        return entries

    def _tcp_services(self, created: list[ServiceEntry]) -> tuple[ir.Service, ...]:
        self._tcp = self._updated(self._tcp, created, lambda s: s.protocol == "tcp")
        return tuple(e.service for e in self._tcp.values())

    def _port_services(self, created: list[ServiceEntry]) -> tuple[ir.Service, ...]:
        """The HTTP services callers also reach by port (`outbound_port`)."""
        self._by_port = self._updated(
            self._by_port, created, lambda s: s.is_http and s.outbound_port is not None
        )
        return tuple(e.service for e in self._by_port.values())

    def _updated(
        self,
        entries: dict[str, ServiceEntry],
        created: list[ServiceEntry],
        wanted: Callable[[ir.Service], bool],
    ) -> dict[str, ServiceEntry]:
        """`entries` by name, updated from what this change made (not by a scan of every
        service: this runs on every change of a 10,000-service mesh)."""
        kept = {n: e for n, e in entries.items() if self._services.get(n) is e}
        kept.update((e.service.name, e) for e in created if wanted(e.service))
        return dict(sorted(kept.items()))

    @property
    def last(self) -> MeshResources | None:
        """The last translation's output (None before the first)."""
        return self._last

    def forget(self, proxy: proxies.Proxy) -> None:
        self._views.pop(proxy, None)


def _service_parts(
    entries: Iterable[ServiceEntry], by_service: dict[str, list[proxies.Instance]]
) -> list[ServiceParts]:
    """Each service's parts; a service with no instance, now or before, keeps its parts
    without a call (most services of a big mesh, on every change). A plain loop: this runs over
    every service on every change."""
    parts = []
    for entry in entries:
        members = by_service.get(entry.service.name)
        if members is None and entry.instances == () and entry.parts is not None:
            parts.append(entry.parts)
        else:
            parts.append(entry.parts_for(members))
    return parts
