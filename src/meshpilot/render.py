"""`meshpilot render`: the resources one sidecar would receive, computed offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshpilot.errors import MeshpilotError
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.schema import MeshSpec
from meshpilot.model import ir, proxies
from meshpilot.model.locality import Locality
from meshpilot.translator.build import build_ir
from meshpilot.translator.resources import decode
from meshpilot.translator.translate import Translator
from meshpilot.xds.snapshot import check_consistent
from meshpilot.xds.types import short_name

RENDER_IP = "127.0.0.1"
RENDER_APP_PORT = 8080


def render_resources(
    mesh_path: Path,
    service: str,
    version: str | None,
    type_: str,
    *,
    secure: bool = True,
    locality: Locality | None = None,
) -> dict[str, list[Any]]:
    """Per short type name (cds, eds, lds, rds), the resources as Envoy JSON with `@type`.

    Endpoints are the static ones from the file: no sidecar is connected offline, as a sidecar
    in `locality` sees them. A name under `gateways:` renders that gateway's resources.
    """
    spec = load_mesh(mesh_path)
    mesh = build_ir(spec, mesh_path.parent, secure=secure)
    gateway = any(g.name == service for g in mesh.gateways)
    if not gateway:
        check_sidecar_exists(spec, mesh_path, service, version)
    labels = ir.labels_of({"version": version} if version else {})
    proxy = proxies.Proxy(
        f"{service}~{RENDER_IP}",
        service,
        RENDER_IP,
        RENDER_APP_PORT,
        labels,
        gateway=gateway,
        locality=locality,
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


def check_sidecar_exists(
    spec: MeshSpec, mesh_path: Path, service: str, version: str | None
) -> None:
    """A sidecar of a service or version the file does not define would get a plausible but
    meaningless configuration: say what exists instead."""
    if service not in spec.services:
        known = ", ".join(sorted(spec.services)) or "none"
        raise MeshpilotError(f"no service {service!r} in {mesh_path.name} (services: {known})")
    versions = defined_versions(spec, service)
    if version is not None and version not in versions:
        known = ", ".join(sorted(versions)) or "none"
        raise MeshpilotError(f"service {service!r} has no version {version!r} (versions: {known})")


def defined_versions(spec: MeshSpec, service: str) -> set[str]:
    """The `version` labels a subset, a static endpoint or a `run:` entry of `service` carries."""
    spec_of = spec.services[service]
    labelled = [*spec_of.subsets.values(), *(e.labels for e in spec_of.endpoints)]
    labelled += [
        run.labels | ({"version": run.version} if run.version else {}) for run in spec_of.run
    ]
    return {labels["version"] for labels in labelled if "version" in labels}
