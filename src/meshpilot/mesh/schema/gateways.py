"""`gateways:`: edge proxies that let traffic from outside the mesh in, by Host and path."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from meshpilot.mesh.fields import HttpPath, ServiceName, SpecModel
from meshpilot.netaddr import is_ip


def _listen(value: str) -> str:
    """An Envoy listener binds an IP address, not a name."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not is_ip(host) or not port.isdigit() or not 0 < int(port) < 65536:
        raise PydanticCustomError(
            "listen", "'{value}' is not IP:PORT (e.g. 127.0.0.1:8000)", {"value": value}
        )
    return value


ListenAddress = Annotated[str, AfterValidator(_listen)]


class GatewayRouteSpec(SpecModel):
    """Requests whose path starts with `path_prefix` (default: any) go to `service`, through
    its routes as any caller's would."""

    service: ServiceName
    path_prefix: HttpPath | None = None


class GatewayTlsSpec(SpecModel):
    """The certificate (chain) and key files the gateway presents (relative to the mesh file)."""

    cert: str = Field(min_length=1)
    key: str = Field(min_length=1)


class GatewaySpec(SpecModel):
    listen: ListenAddress
    # Host (without port; `*` for any other) -> a service, or path prefixes to services.
    hosts: dict[str, ServiceName | list[GatewayRouteSpec]] = Field(min_length=1)
    tls: GatewayTlsSpec | None = None
