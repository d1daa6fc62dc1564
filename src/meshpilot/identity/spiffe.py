"""SPIFFE IDs of workloads: `spiffe://<trust_domain>/service/<service>`.

The trust domain follows the SPIFFE ID standard (lower-case letters, digits, `.`, `-`, `_`);
it defaults to the mesh name, normalised into that alphabet. The path is always
`/service/<name>` with a service name as the mesh file allows it (a DNS label), so that a
certificate's URI SAN names exactly one service of exactly one mesh.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from meshpilot.identity.errors import InvalidSpiffeId

SCHEME = "spiffe://"
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SERVICE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# The SPIFFE standard caps a trust domain at 255 bytes (it becomes part of a URI SAN).
MAX_TRUST_DOMAIN = 255


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    service: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        check_service_name(self.service)

    @property
    def uri(self) -> str:
        return f"{SCHEME}{self.trust_domain}/service/{self.service}"

    def __str__(self) -> str:
        return self.uri


def check_service_name(name: str) -> str:
    """Return `name` if it is a service name as the mesh file allows it (a DNS label)."""
    if not _SERVICE.fullmatch(name):
        raise InvalidSpiffeId(
            f"service name '{name}' is not a DNS label (lower-case letters, digits and '-', "
            "at most 63 characters)"
        )
    return name


def check_trust_domain(name: str) -> str:
    """Return `name` if it is a valid SPIFFE trust domain, else raise InvalidSpiffeId."""
    if not name or len(name) > MAX_TRUST_DOMAIN or not _TRUST_DOMAIN.fullmatch(name):
        raise InvalidSpiffeId(
            f"'{name}' is not a SPIFFE trust domain: use 1 to {MAX_TRUST_DOMAIN} lower-case "
            "letters, digits, '.', '-' or '_'"
        )
    return name


def trust_domain_for_mesh(mesh: str) -> str:
    """The default trust domain of a mesh: its name, lower-cased, with every character SPIFFE
    does not allow replaced by '-' (so 'Demo Mesh' gives 'demo-mesh')."""
    normalised = re.sub(r"[^a-z0-9._-]+", "-", mesh.lower()).strip("-.")
    return check_trust_domain(normalised[:MAX_TRUST_DOMAIN].rstrip("-."))


def parse_spiffe_id(uri: str) -> SpiffeId:
    """Read a workload's SPIFFE ID; anything but `spiffe://TD/service/NAME` is refused."""
    if not uri.startswith(SCHEME):
        raise InvalidSpiffeId(f"'{uri}' is not a SPIFFE ID: it must start with '{SCHEME}'")
    trust_domain, _, path = uri[len(SCHEME) :].partition("/")
    kind, _, service = path.partition("/")
    if kind != "service" or not service:
        raise InvalidSpiffeId(f"'{uri}' is not a workload ID of the form {SCHEME}TD/service/NAME")
    return SpiffeId(trust_domain, service)


def service_of(uri: str, trust_domain: str | None = None) -> str | None:
    """The service a peer's SPIFFE ID names (of `trust_domain`, if given); None for anything
    else: no certificate, another kind of ID, another trust domain."""
    try:
        spiffe_id = parse_spiffe_id(uri)
    except InvalidSpiffeId:
        return None
    if trust_domain is not None and spiffe_id.trust_domain != trust_domain:
        return None
    return spiffe_id.service
