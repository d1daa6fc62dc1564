"""Who is calling: the one place that defines how a caller's service identity travels.

The caller's sidecar sets SOURCE_HEADER on every outbound request, overwriting whatever the app
sent; the destination's sidecar and the mixer read it. A request that did not come through a
sidecar carries no source. Swapping this for certificate-based identity changes this module and
the two builders that use it.

Workload identity proper lives in the submodules: `spiffe` (SPIFFE IDs), `ca` (the mesh CA),
`tokens` (join tokens), `agent` (the sidecar's key, CSR and files), `client` (the agent asking the
certificate service, and renewing), `service` (the certificate service on the xDS port), `tls`
(the xDS port's TLS, and the agent's pinned first handshake), `authority` (the control plane's CA
and tokens from a mesh file), `state` (the state directory). The header names above
stay here while their importers are being reworked.
"""

from __future__ import annotations

from collections.abc import Mapping

SOURCE_HEADER = "x-mesh-source"
# Sent by the destination's sidecar with every ext_authz check: which service is being called.
DESTINATION_METADATA = "x-mesh-destination"
# Set by the destination's sidecar on responses, so the caller's access log knows who answered.
VERSION_HEADER = "x-mesh-version"


def source_of(headers: Mapping[str, str]) -> str | None:
    return headers.get(SOURCE_HEADER) or None
