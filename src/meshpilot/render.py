"""`meshpilot render`: the resources one sidecar would receive, computed offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshpilot.model import ir, proxies
from meshpilot.translator.build import load_ir
from meshpilot.translator.resources import decode
from meshpilot.translator.translate import Translator
from meshpilot.xds.snapshot import check_consistent
from meshpilot.xds.types import short_name

RENDER_IP = "127.0.0.1"
RENDER_APP_PORT = 8080


def render_resources(
    mesh_path: Path, service: str, version: str | None, type_: str, *, secure: bool = True
) -> dict[str, list[Any]]:
    """Per short type name (cds, eds, lds, rds), the resources as Envoy JSON with `@type`.

    Endpoints are the static ones from the file: no sidecar is connected offline. A name under
    `gateways:` renders that gateway's resources.
    """
    labels = ir.labels_of({"version": version} if version else {})
    mesh = load_ir(mesh_path, secure=secure)
    gateway = any(g.name == service for g in mesh.gateways)
    proxy = proxies.Proxy(
        f"{service}~{RENDER_IP}", service, RENDER_IP, RENDER_APP_PORT, labels, gateway=gateway
    )
    translator = Translator()
    shared = translator.translate(mesh, [])
    view = translator.view(shared, proxy)
    check_consistent(view)
    return {
        short_name(type_url): [decode(r) for r in resources.resources.values()]
        for type_url, resources in view.items()
        if type_ in ("all", short_name(type_url))
    }
