"""Workload identity: who a sidecar (or the mixer) is, proved by an mTLS certificate.

A caller is known by the SPIFFE ID in the certificate its sidecar presents, never by a header:
SOURCE_HEADER, which carried it before, is stripped from every request a sidecar receives.
The submodules: `spiffe` (SPIFFE IDs), `ca` (the mesh CA), `tokens` (join tokens), `admission`
(tokens checked at the control plane's doors), `agent` (the workload's key, CSR and checks),
`client` (the agent asking the certificate service, and renewing), `sds` (the agent serving
Envoy its certificate), `workload_tls` (a Python server's mTLS with a workload certificate),
`service` (the certificate service on the xDS port), `tls` (the xDS port's TLS, and the agent's
pinned first handshake), `authority` (the control plane's CA and tokens from a mesh file),
`state` (the state directory).
"""

from __future__ import annotations

SOURCE_HEADER = "x-mesh-source"
# Sent by the destination's sidecar with every ext_authz check: which service is being called.
DESTINATION_METADATA = "x-mesh-destination"
# Set by the destination's sidecar on responses, so the caller's access log knows who answered.
VERSION_HEADER = "x-mesh-version"
