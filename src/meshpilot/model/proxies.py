"""Connected proxies (Envoy sidecars and proxyless gRPC clients), the instances sidecars make of
their services, and the ports every sidecar uses (the same layout on every instance's own IP)."""

from __future__ import annotations

from dataclasses import dataclass

from meshpilot.model.ir import Labels
from meshpilot.model.locality import Locality

INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000


@dataclass(frozen=True)
class Instance:
    """A running member of a service that receives mesh traffic at `address:port`."""

    service: str
    address: str
    port: int
    labels: Labels
    locality: Locality | None = None


@dataclass(frozen=True)
class Proxy:
    """What the translator needs to know about one connected proxy to build its view."""

    node_id: str
    service: str
    ip: str
    app_port: int
    labels: Labels
    # Where the app and the sidecar's app-facing ports (admin, outbound) live when they are kept
    # off the instance IP, e.g. 127.0.0.1 inside the instance's own network namespace.
    local_ip: str | None = None
    # A gRPC client with its own xDS client and no sidecar (Istio's proxyless gRPC): it calls
    # services of the mesh but is not one of their instances, and has no listeners of its own.
    proxyless: bool = False
    # The mesh's gateway named `service` (under `gateways:`): an edge proxy with no app, not an
    # instance of any service, whose view is its listener and the services it sends to.
    gateway: bool = False
    # Where it runs (node.locality): orders the members of the services it calls, and its own
    # instance's place among its service's members.
    locality: Locality | None = None

    @property
    def app_ip(self) -> str:
        """The app's address, and the address of the listeners only the app may reach."""
        return self.local_ip or self.ip

    @property
    def instance(self) -> Instance | None:
        """The endpoint a sidecar makes of its service; None for a proxyless client or a
        gateway."""
        if self.proxyless or self.gateway:
            return None
        return Instance(self.service, self.ip, INBOUND_PORT, self.labels, self.locality)
