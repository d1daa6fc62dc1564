"""The mesh identity of control-plane replicas, shared through their store (`serve --store`).

Every replica must sign with one CA and accept every join token, whichever replica a sidecar
reaches: the root CA (certificate and key) and the token key live in the store's shared keys
(`store/base.py` SharedKeys), created by the first replica to open the mesh identity and only
read by the others (create-if-absent, so two replicas starting at once agree on one CA). The
first one offers its state directory's root and token key when it has them, so a control
plane that ran alone keeps its CA and its tokens when it becomes a replica; else new ones.
The mesh they serve (its name and CA fingerprint) is stored too, for `meshpilot token --store`.
Each replica keeps a copy of the shared CA and token key in its state directory, so `meshpilot
token --state-dir` on its host works as without a store.

A plugged-in CA (`security.ca` files) is read from the files by every replica; only the token
key is shared then. `meshpilot token --revoke ID --store` revokes a token on every replica:
the id is stored under `revoked/<id>`, which replicas follow (a watch); a replica's own
`tokens/revoked` file still counts too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from meshpilot.identity.authority import (
    MeshIdentity,
    SharedSecrets,
    binding_record,
    open_mesh_identity,
    read_binding,
)
from meshpilot.identity.ca import ROOT_CERT, ROOT_KEY, new_root_pem
from meshpilot.identity.errors import IdentityError
from meshpilot.identity.state import private_dir, read_file, write_file
from meshpilot.identity.tokens import (
    REVOKED,
    SIGNING_KEY,
    TokenAuthority,
    check_token_id,
    new_signing_key_pem,
)
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.schema import MeshSpec
from meshpilot.store import SharedKeys, open_store

log = logging.getLogger(__name__)

ROOT = "root-ca"  # JSON {"cert": PEM, "key": PEM}: one value, so both are stored together
TOKEN_KEY = "token-key"
BINDING = "mesh"
REVOKED_PREFIX = "revoked/"


async def open_shared_identity(
    spec: MeshSpec, mesh_dir: Path, state_dir: Path, keys: SharedKeys
) -> MeshIdentity:
    """The mesh identity every replica on the store of `keys` shares (see the module)."""
    root = None if spec.security.ca is not None else await _shared_root(keys, state_dir)
    token_key = await keys.setdefault(TOKEN_KEY, _local_or_new_token_key(state_dir))
    if root is not None:
        _keep_copy(state_dir / ROOT_CERT, root[0], secret=False)
        _keep_copy(state_dir / ROOT_KEY, root[1], secret=True)
    _keep_copy(state_dir / SIGNING_KEY, token_key, secret=True)
    identity = open_mesh_identity(spec, mesh_dir, state_dir, SharedSecrets(root, token_key))
    await keys.put(BINDING, binding_record(identity.ca, spec.mesh))
    return identity


async def shared_token_authority(keys: SharedKeys, state_dir: Path) -> TokenAuthority:
    """The token authority of the mesh the replicas on the store of `keys` last opened."""
    record, token_key = await keys.get(BINDING), await keys.get(TOKEN_KEY)
    if record is None or token_key is None:
        raise IdentityError(
            "no replica has opened the mesh identity in this store yet: start `meshpilot "
            "serve --store` with a mesh once, or pass the mesh file with --mesh"
        )
    mesh, fingerprint = read_binding(record, "the store's mesh record")
    return TokenAuthority.from_pem(token_key, mesh, fingerprint, state_dir / REVOKED)


async def follow_revocations(keys: SharedKeys) -> AsyncIterator[frozenset[str]]:
    """The ids of the tokens revoked through the store: now, then each time one is added."""
    async for ids in keys.names(REVOKED_PREFIX):
        yield ids


def store_revoke(url: str, token_id: str) -> None:
    """`meshpilot token --revoke ID --store`: refused by every replica from its next check."""
    check_token_id(token_id)

    async def run() -> None:
        store = open_store(url)
        try:
            await store.keys.put(REVOKED_PREFIX + token_id, b"")
        finally:
            await store.close()

    asyncio.run(run())


def store_token_authority(url: str, state_dir: Path, mesh_file: Path | None) -> TokenAuthority:
    """`meshpilot token --store`: the token authority of the mesh in `mesh_file`, or else of
    the mesh the replicas on the store `url` last opened."""

    async def run() -> TokenAuthority:
        store = open_store(url)
        try:
            if mesh_file is None:
                return await shared_token_authority(store.keys, state_dir)
            spec = load_mesh(mesh_file)
            return (
                await open_shared_identity(spec, mesh_file.parent, state_dir, store.keys)
            ).tokens
        finally:
            await store.close()

    return asyncio.run(run())


async def _shared_root(keys: SharedKeys, state_dir: Path) -> tuple[bytes, bytes]:
    cert, key = _local_root(state_dir) or new_root_pem()
    offered = json.dumps({"cert": cert.decode(), "key": key.decode()}).encode()
    stored = await keys.setdefault(ROOT, offered)
    try:
        fields = json.loads(stored)
        return str(fields["cert"]).encode(), str(fields["key"]).encode()
    except (ValueError, KeyError, TypeError):
        raise IdentityError("the store's root CA is damaged") from None


def _local_root(state_dir: Path) -> tuple[bytes, bytes] | None:
    """The state directory's root (certificate, key), if a control plane made one there."""
    cert, key = state_dir / ROOT_CERT, state_dir / ROOT_KEY
    if not (cert.is_file() and key.is_file()):
        return None
    return read_file(cert, secret=False), read_file(key, secret=True)


def _keep_copy(path: Path, data: bytes, *, secret: bool) -> None:
    """Keep the store's `data` in the state directory too, so that `meshpilot token
    --state-dir` on a replica's host issues tokens every replica accepts; a different file
    there (a control plane that ran alone, with another CA) is moved aside, not lost."""
    if path.is_file() and read_file(path, secret=secret) == data:
        return
    if path.is_file():
        aside = path.with_name(path.name + ".replaced")
        with contextlib.suppress(FileNotFoundError):  # moved by a replica sharing the dir
            path.replace(aside)
        log.warning("%s is not the replicas' shared one: moved to %s", path, aside)
    write_file(private_dir(path.parent) / path.name, data, secret=secret)


def _local_or_new_token_key(state_dir: Path) -> bytes:
    path = state_dir / SIGNING_KEY
    return read_file(path, secret=True) if path.is_file() else new_signing_key_pem()
