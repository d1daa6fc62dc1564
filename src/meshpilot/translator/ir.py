"""The mesh as plain frozen values: no Envoy types, no YAML, defaults already applied.

The IR is what the Envoy builders consume. Everything is a tuple or a frozen dataclass so that
values compare and hash by content, which lets the translator reuse work for unchanged parts.
Durations are whole milliseconds. Labels are sorted (key, value) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]

INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000


def labels_of(mapping: dict[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    exact: str


@dataclass(frozen=True)
class RouteMatch:
    """All given conditions must hold. Nothing given matches every request."""

    path_prefix: str | None = None
    path: str | None = None
    headers: tuple[HeaderMatch, ...] = ()
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Destination:
    """A share of a route's traffic: a subset, or the whole service when `subset` is None."""

    subset: str | None
    weight: int = 100


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    on: tuple[str, ...]
    per_try_timeout_ms: int | None = None


@dataclass(frozen=True)
class Route:
    name: str
    match: RouteMatch
    to: tuple[Destination, ...]
    timeout_ms: int | None = None
    retries: RetryPolicy | None = None


@dataclass(frozen=True)
class Subset:
    name: str
    labels: Labels


@dataclass(frozen=True)
class StaticEndpoint:
    address: str
    port: int
    labels: Labels = ()


@dataclass(frozen=True)
class Service:
    name: str
    port: int
    protocol: str
    subsets: tuple[Subset, ...] = ()
    endpoints: tuple[StaticEndpoint, ...] = ()
    routes: tuple[Route, ...] = ()

    def __hash__(self) -> int:
        """Hashed once: services key the translator's caches, 10,000 lookups per change."""
        cached: int | None = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(
                (self.name, self.port, self.protocol, self.subsets, self.endpoints, self.routes)
            )
            object.__setattr__(self, "_hash", cached)
        return cached


@dataclass(frozen=True)
class MeshIR:
    name: str
    services: tuple[Service, ...]

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


@dataclass(frozen=True)
class Instance:
    """A running member of a service that receives mesh traffic at `address:port`."""

    service: str
    address: str
    port: int
    labels: Labels


@dataclass(frozen=True)
class Proxy:
    """What the translator needs to know about one connected sidecar to build its view."""

    node_id: str
    service: str
    ip: str
    app_port: int
    labels: Labels

    @property
    def instance(self) -> Instance:
        return Instance(self.service, self.ip, INBOUND_PORT, self.labels)
