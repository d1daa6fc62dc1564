"""MeshSpec -> MeshIR: apply defaults, read durations, sort, so that builders never have to.

Pure: the same spec always gives an equal IR. The spec is assumed valid (`mesh.load` checked it).
"""

from __future__ import annotations

from meshpilot.mesh.durations import parse_duration
from meshpilot.mesh.schema import (
    DefaultsSpec,
    DestinationSpec,
    EndpointSpec,
    MatchSpec,
    MeshSpec,
    RetriesSpec,
    RouteSpec,
    ServiceSpec,
)
from meshpilot.translator.ir import (
    Destination,
    HeaderMatch,
    MeshIR,
    RetryPolicy,
    Route,
    RouteMatch,
    Service,
    StaticEndpoint,
    Subset,
    labels_of,
)

DEFAULT_ROUTE = "default"
WHOLE_SERVICE = (Destination(subset=None, weight=100),)


def build_ir(spec: MeshSpec) -> MeshIR:
    """Sorted by name throughout, so that equal files give equal IR and equal versions."""
    defaults = spec.defaults or DefaultsSpec()
    services = tuple(service(name, spec.services[name], defaults) for name in sorted(spec.services))
    return MeshIR(name=spec.mesh, services=services)


def service(name: str, spec: ServiceSpec, defaults: DefaultsSpec) -> Service:
    routes = [route(r, defaults) for r in spec.routes] or [default_route(defaults)]
    return Service(
        name=name,
        port=spec.port,
        protocol=spec.protocol,
        subsets=tuple(Subset(n, labels_of(spec.subsets[n])) for n in sorted(spec.subsets)),
        endpoints=tuple(static_endpoint(e) for e in spec.endpoints),
        routes=tuple(routes),
    )


def static_endpoint(spec: EndpointSpec) -> StaticEndpoint:
    return StaticEndpoint(address=spec.address, port=spec.port, labels=labels_of(spec.labels))


def route(spec: RouteSpec, defaults: DefaultsSpec) -> Route:
    """A route's own timeout and retries replace the defaults whole; they are not merged."""
    return Route(
        name=spec.name,
        match=route_match(spec.match),
        to=destinations(spec.to),
        timeout_ms=millis(spec.timeout if spec.timeout is not None else defaults.timeout),
        retries=retry_policy(spec.retries if spec.retries is not None else defaults.retries),
    )


def default_route(defaults: DefaultsSpec) -> Route:
    """What a service without `routes:` gets: everything to the whole service."""
    return route(RouteSpec(name=DEFAULT_ROUTE), defaults)


def route_match(spec: MatchSpec | None) -> RouteMatch:
    """Header names are lower-cased: Envoy matches HTTP headers by their lower-case name."""
    if spec is None:
        return RouteMatch()
    headers = sorted(
        (HeaderMatch(name.lower(), value) for name, value in spec.headers.items()),
        key=lambda header: header.name,
    )
    return RouteMatch(
        path_prefix=spec.path_prefix,
        path=spec.path,
        headers=tuple(headers),
        methods=tuple(spec.methods),
    )


def destinations(to: list[DestinationSpec] | None) -> tuple[Destination, ...]:
    """No `to:` sends to the whole service; a lone entry without a weight takes all traffic."""
    if not to:
        return WHOLE_SERVICE
    return tuple(Destination(d.subset, 100 if d.weight is None else d.weight) for d in to)


def retry_policy(spec: RetriesSpec | None) -> RetryPolicy | None:
    """Kept even with `attempts: 0`, which the route builder turns into "no retries"."""
    if spec is None:
        return None
    return RetryPolicy(spec.attempts, tuple(spec.on), millis(spec.per_try_timeout))


def millis(duration: str | None) -> int | None:
    return None if duration is None else parse_duration(duration)
