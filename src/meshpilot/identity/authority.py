"""The control plane's identity in one place: the mesh CA and the join-token authority, opened
from a mesh file's `security:` section and the state directory.

Opening them records the mesh they serve in `tokens/mesh.json` of the state directory, so that
`meshpilot token` can issue tokens for that mesh (bound to its name and CA fingerprint) without
being given the mesh file again. Replicas on a shared store (`serve --store`) take the root CA
and the token key from the store instead (`identity/shared.py`).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from meshpilot.identity.ca import CertificateAuthority, load_ca
from meshpilot.identity.errors import IdentityError
from meshpilot.identity.spiffe import trust_domain_for_mesh
from meshpilot.identity.state import private_dir, read_file, write_file
from meshpilot.identity.tokens import REVOKED, TokenAuthority
from meshpilot.mesh.durations import parse_duration
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.schema import MeshSpec

BINDING = Path("tokens") / "mesh.json"


@dataclass(frozen=True)
class MeshIdentity:
    ca: CertificateAuthority
    tokens: TokenAuthority
    certificate_ttl: dt.timedelta


@dataclass(frozen=True)
class SharedSecrets:
    """The root CA (certificate and key, PEM) and the token key that control-plane replicas
    share through their store (`identity/shared.py`); `root` is None with a plugged-in CA."""

    root: tuple[bytes, bytes] | None
    token_key: bytes


def open_mesh_identity(
    spec: MeshSpec, mesh_dir: Path, state_dir: Path, shared: SharedSecrets | None = None
) -> MeshIdentity:
    """The CA (plugged in by the mesh file, else the replicas' `shared` root, else the state
    dir's) and the token authority (with the `shared` token key, else the state dir's) of the
    mesh `spec`; `mesh_dir` is where relative CA file names start."""
    security = spec.security
    trust_domain = security.trust_domain or trust_domain_for_mesh(spec.mesh)
    files = (mesh_dir / security.ca.cert, mesh_dir / security.ca.key) if security.ca else None
    if shared is not None and shared.root is not None and files is None:
        ca = CertificateAuthority.from_pem(*shared.root, trust_domain)
    else:
        ca = load_ca(trust_domain, state_dir, files)
    if shared is None:
        tokens = TokenAuthority.open(state_dir, spec.mesh, ca.fingerprint)
    else:
        tokens = TokenAuthority.from_pem(
            shared.token_key, spec.mesh, ca.fingerprint, state_dir / REVOKED
        )
    write_file(
        private_dir(state_dir / BINDING.parent) / BINDING.name,
        binding_record(ca, spec.mesh),
        secret=False,
    )
    ttl = dt.timedelta(milliseconds=parse_duration(security.certificate_ttl))
    return MeshIdentity(ca, tokens, ttl)


def binding_record(ca: CertificateAuthority, mesh: str) -> bytes:
    """What `meshpilot token` needs to know of the mesh it issues tokens for (JSON)."""
    record = {"mesh": mesh, "trust_domain": ca.trust_domain, "ca_fingerprint": ca.fingerprint}
    return json.dumps(record, indent=2).encode() + b"\n"


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
    mesh, fingerprint = read_binding(read_file(path, secret=False), f"'{path}'")
    return TokenAuthority.open(state_dir, mesh, fingerprint)


def read_binding(record: bytes, name: str) -> tuple[str, str]:
    """The mesh name and CA fingerprint of a `binding_record` (`name` says where it is)."""
    try:
        fields = json.loads(record)
        return str(fields["mesh"]), str(fields["ca_fingerprint"])
    except (ValueError, KeyError, TypeError):
        raise IdentityError(f"{name} is damaged; pass the mesh file with --mesh") from None
