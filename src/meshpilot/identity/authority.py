"""The control plane's identity in one place: the mesh CA and the join-token authority, opened
from a mesh file's `security:` section and the state directory.

Opening them records the mesh they serve in `tokens/mesh.json` of the state directory, so that
`meshpilot token` can issue tokens for that mesh (bound to its name and CA fingerprint) without
being given the mesh file again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from meshpilot.identity.ca import CertificateAuthority, load_ca
from meshpilot.identity.errors import IdentityError
from meshpilot.identity.spiffe import trust_domain_for_mesh
from meshpilot.identity.state import read_file, write_file
from meshpilot.identity.tokens import TokenAuthority
from meshpilot.mesh.durations import parse_duration
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.schema import MeshSpec

BINDING = Path("tokens") / "mesh.json"


@dataclass(frozen=True)
class MeshIdentity:
    ca: CertificateAuthority
    tokens: TokenAuthority
    certificate_ttl: dt.timedelta


def open_mesh_identity(spec: MeshSpec, mesh_dir: Path, state_dir: Path) -> MeshIdentity:
    """The CA (plugged in by the mesh file, or the state dir's root) and the token authority
    of the mesh `spec`; `mesh_dir` is where relative CA file names start."""
    security = spec.security
    trust_domain = security.trust_domain or trust_domain_for_mesh(spec.mesh)
    files = (mesh_dir / security.ca.cert, mesh_dir / security.ca.key) if security.ca else None
    ca = load_ca(trust_domain, state_dir, files)
    tokens = TokenAuthority.open(state_dir, spec.mesh, ca.fingerprint)
    record = {"mesh": spec.mesh, "trust_domain": trust_domain, "ca_fingerprint": ca.fingerprint}
    write_file(state_dir / BINDING, json.dumps(record, indent=2).encode() + b"\n", secret=False)
    ttl = dt.timedelta(milliseconds=parse_duration(security.certificate_ttl))
    return MeshIdentity(ca, tokens, ttl)


def token_authority(state_dir: Path, mesh_file: Path | None = None) -> TokenAuthority:
    """The token authority of the mesh in `mesh_file`, or else of the mesh last opened with
    `state_dir`."""
    if mesh_file is None:
        return open_token_authority(state_dir)
    return open_mesh_identity(load_mesh(mesh_file), mesh_file.parent, state_dir).tokens


def open_token_authority(state_dir: Path) -> TokenAuthority:
    """The token authority of the mesh last opened with `state_dir`."""
    path = state_dir / BINDING
    if not path.is_file():
        raise IdentityError(
            f"no mesh has used the state directory '{state_dir}' yet: run `meshpilot serve "
            "--state-dir` there once, or pass the mesh file with --mesh"
        )
    try:
        record = json.loads(read_file(path, secret=False))
        mesh, fingerprint = record["mesh"], record["ca_fingerprint"]
    except (ValueError, KeyError, TypeError):
        raise IdentityError(f"'{path}' is damaged; pass the mesh file with --mesh") from None
    return TokenAuthority.open(state_dir, str(mesh), str(fingerprint))
