"""gRPC's xDS bootstrap for a proxyless client: a gRPC app that joins the mesh with no sidecar.

gRPC reads it from the file `$GRPC_XDS_BOOTSTRAP` (or the JSON text in
`$GRPC_XDS_BOOTSTRAP_CONFIG`) when a channel's target is `xds:///SERVICE:PORT`: where the control
plane is, and the node it says it is. The node's metadata `proxyless: true` tells the control
plane to send API listeners instead of a sidecar's listeners, and not to make the client an
endpoint of its service. Plaintext only: a proxyless client joins a control plane run with
`serve --insecure` (see docs/proxyless-grpc.md).
"""

from __future__ import annotations

import json
from typing import Any

from meshpilot.bootstrap import SidecarIdentity, node_locality, url_host


def render_grpc_bootstrap(identity: SidecarIdentity) -> str:
    return json.dumps(grpc_bootstrap(identity), indent=2) + "\n"


def grpc_bootstrap(identity: SidecarIdentity) -> dict[str, Any]:
    """Every control-plane replica given (`--xds`), in order, each spoken to in plaintext over
    state-of-the-world ADS (xDS v3): gRPC streams to the first and, with xDS fallback (gRFC
    A71), to the next one while the first is unreachable."""
    return {
        "xds_servers": [xds_server(host, port) for host, port in identity.xds_addresses],
        "node": proxyless_node(identity),
    }


def xds_server(host: str, port: int) -> dict[str, Any]:
    return {
        "server_uri": f"{url_host(host)}:{port}",
        "channel_creds": [{"type": "insecure"}],
        "server_features": ["xds_v3"],
    }


def proxyless_node(identity: SidecarIdentity) -> dict[str, Any]:
    """Node id `service~ip~proxyless`, apart from a sidecar of the same service on that IP."""
    found: dict[str, Any] = {
        "id": f"{identity.node_id}~proxyless",
        "cluster": identity.service,
        "metadata": {
            "service": identity.service,
            "ip": identity.ip,
            "labels": dict(identity.labels),
            "proxyless": True,
        },
    }
    if identity.locality is not None:
        found["locality"] = node_locality(identity.locality)
    return found
