"""Per-service parts: what one service contributes to every proxy that may call it.

A service's clusters (one per subset) and virtual host depend on the service alone; its
endpoints also on the sidecars connected as its members. Each is built and serialized once per
change of those inputs, and shared as the same objects by every proxy's view.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

from meshpilot.errors import InconsistentSnapshot
from meshpilot.model import ir, names, proxies
from meshpilot.netaddr import is_ip
from meshpilot.translator.envoy import cluster, endpoint, http_filters, route
from meshpilot.translator.resources import Part, Resource, resource, resource_from_bytes
from meshpilot.xds.types import CLUSTER, ENDPOINT


@dataclass(frozen=True)
class ServiceOutput:
    """What one service contributes to every proxy: its clusters and its virtual host."""

    clusters: Part
    virtual_host_entry: bytes
    route_targets: frozenset[str]


class ServiceParts(NamedTuple):
    """A service's share of every proxy's outbound configuration."""

    name: str
    output: ServiceOutput
    endpoints: Part


def _cluster_namer(service: ir.Service) -> route.ClusterNamer:
    return lambda subset: names.outbound_cluster(service.name, service.port, subset)


def _service_cluster_names(service: ir.Service) -> list[str]:
    namer = _cluster_namer(service)
    return [namer(None), *(namer(s.name) for s in service.subsets)]


def translate_service(service: ir.Service) -> ServiceOutput:
    """The service's clusters (one per subset, each named after its endpoints) and routes."""
    cluster_names = _service_cluster_names(service)
    namer = _cluster_namer(service)
    targets = {namer(d.subset) for r in service.routes for d in r.to if d.weight > 0}
    targets |= {namer(r.mirror.subset) for r in service.routes if r.mirror is not None}
    missing = targets - set(cluster_names)
    if missing:
        raise InconsistentSnapshot(f"service {service.name}: routes to unknown {sorted(missing)}")
    external = is_external(service)
    built = _dns_clusters if external else _eds_clusters
    clusters = Part(built(service, cluster_names))
    virtual_host = route.virtual_host(
        service,
        namer,
        http_filters.OUTBOUND_ROUTES,
        external_domains(service) if external else None,
    )
    vhost = virtual_host.SerializeToString(deterministic=True)
    return ServiceOutput(clusters, route.virtual_host_entry(vhost), frozenset(targets))


def _eds_clusters(service: ir.Service, names: list[str]) -> list[Resource]:
    """`names` as `_service_cluster_names` gives them: the whole service's cluster with the
    service's policy, then each subset's with its own. Each refers to its assignment (same name).
    """
    tls, http2, peer = upstream_tls(service), service.speaks_http2, service.spiffe_id
    policies = [service.policy, *(s.policy for s in service.subsets)]
    return [
        resource_from_bytes(
            CLUSTER, name, cluster.eds_cluster_bytes(name, p, tls, http2, peer), (name,)
        )
        for name, p in zip(names, policies, strict=True)
    ]


def _dns_clusters(service: ir.Service, names: list[str]) -> list[Resource]:
    """An external service's clusters list their members inline (the static endpoints with the
    subset's labels, every one for the whole service): they refer to nothing."""
    tls, http2 = upstream_tls(service), service.speaks_http2
    whole: tuple[ir.Labels, ir.TrafficPolicy] = ((), service.policy)
    settings = [whole, *((s.labels, s.policy) for s in service.subsets)]
    resources = []
    for name, (labels, policy) in zip(names, settings, strict=True):
        wanted = frozenset(labels)
        members = [(e.address, e.port) for e in service.endpoints if wanted <= frozenset(e.labels)]
        built = cluster.dns_cluster(name, members, policy, tls, http2)
        resources.append(resource(CLUSTER, name, built))
    return resources


def upstream_tls(service: ir.Service) -> ir.UpstreamTls | None:
    """The service's TLS; without an `sni`, the endpoints' DNS name when they all share one."""
    tls = service.tls
    if tls is None or tls.sni:
        return tls
    hosts = {e.address for e in service.endpoints if not is_ip(e.address)}
    return dataclasses.replace(tls, sni=hosts.pop()) if len(hosts) == 1 else tls


def is_external(service: ir.Service) -> bool:
    """A service with a static endpoint named by DNS: Envoy resolves its members itself (a
    STRICT_DNS cluster per subset); connected sidecars of such a service are not members."""
    return any(not is_ip(e.address) for e in service.endpoints)


def external_domains(service: ir.Service) -> list[str]:
    """An external service also answers to its endpoints' names (`api.example.com` and
    `api.example.com:443`), so apps can call it by the name they know through the sidecar."""
    hosts = sorted({(e.address, e.port) for e in service.endpoints if not is_ip(e.address)})
    domains = dict.fromkeys(d for host, port in hosts for d in (host, f"{host}:{port}"))
    return [d for d in domains if d not in (service.name, f"{service.name}:{service.port}")]


def translate_endpoints(service: ir.Service, instances: tuple[proxies.Instance, ...]) -> Part:
    """One assignment per EDS cluster of the service: static endpoints plus connected
    instances. An external service has none: its clusters carry their members inline."""
    if is_external(service):
        return Part([])
    members = [(e.address, e.port, frozenset(e.labels)) for e in service.endpoints]
    members += [(i.address, i.port, frozenset(i.labels)) for i in instances]
    namer = _cluster_namer(service)
    everyone = [(address, port) for address, port, _ in members]
    assignments = [(namer(None), everyone)]
    for subset in service.subsets:
        wanted = frozenset(subset.labels)
        chosen = [(address, port) for address, port, labels in members if wanted <= labels]
        assignments.append((namer(subset.name), chosen))
    return Part(
        resource_from_bytes(ENDPOINT, name, endpoint.cluster_load_assignment_bytes(name, chosen))
        for name, chosen in assignments
    )


def mixer_part(mixer: ir.Mixer) -> Part:
    """The cluster every sidecar reaches the mixer through."""
    built = cluster.mixer_cluster(names.MIXER_CLUSTER, mixer.address, mixer.spiffe_id)
    return Part([resource(CLUSTER, names.MIXER_CLUSTER, built)])


def _instance_key(instance: proxies.Instance) -> tuple[str, int]:
    return (instance.address, instance.port)


class ServiceEntry:
    """A service's translation, and its parts for the members it had at the last change."""

    __slots__ = ("instances", "output", "parts", "service")

    def __init__(self, service: ir.Service) -> None:
        self.service = service
        self.output = translate_service(service)
        self.instances: tuple[proxies.Instance, ...] | None = None
        self.parts: ServiceParts | None = None

    def parts_for(self, members: list[proxies.Instance] | None) -> ServiceParts:
        """The same object while the members are the same, so sets made of it are reused."""
        instances = tuple(sorted(members, key=_instance_key)) if members else ()
        if self.parts is None or instances != self.instances:
            endpoints = translate_endpoints(self.service, instances)
            self.parts = ServiceParts(self.service.name, self.output, endpoints)
            self.instances = instances
        return self.parts
