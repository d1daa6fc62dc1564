"""The mesh identity shared by replicas through a store (memory here; real etcd:
e2e/test_store_etcd.py): one CA and one token key, whoever opens it first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshpilot.identity.authority import open_token_authority
from meshpilot.identity.ca import ROOT_CERT, ROOT_KEY, CertificateAuthority
from meshpilot.identity.errors import IdentityError, TokenRevoked, TokenSignatureInvalid
from meshpilot.identity.shared import (
    REVOKED_PREFIX,
    follow_revocations,
    open_shared_identity,
    shared_token_authority,
)
from meshpilot.identity.tokens import TokenAuthority, read_token
from meshpilot.mesh.load import load_mesh
from meshpilot.mesh.schema import MeshSpec
from meshpilot.store import MemoryStore


@pytest.fixture
def spec(tmp_path: Path) -> MeshSpec:
    path = tmp_path / "mesh.yaml"
    path.write_text("mesh: demo\nservices: {reviews: {port: 9080}}\n")
    return load_mesh(path)


async def test_replicas_opening_at_once_share_one_ca_and_accept_each_others_tokens(
    spec: MeshSpec, tmp_path: Path
) -> None:
    keys = MemoryStore().keys
    one, two = await asyncio.gather(
        open_shared_identity(spec, tmp_path, tmp_path / "one", keys),
        open_shared_identity(spec, tmp_path, tmp_path / "two", keys),
    )
    assert one.ca.fingerprint == two.ca.fingerprint
    assert two.tokens.verify(one.tokens.issue("reviews")).service == "reviews"
    assert one.tokens.verify(two.tokens.issue("ratings")).service == "ratings"


async def test_each_replica_keeps_a_copy_so_token_state_dir_works_on_its_host(
    spec: MeshSpec, tmp_path: Path
) -> None:
    state = tmp_path / "replica"
    ran_alone = CertificateAuthority.open(state, "demo")  # another CA: moved aside
    keys = MemoryStore().keys
    first = await open_shared_identity(spec, tmp_path, tmp_path / "first", keys)
    await open_shared_identity(spec, tmp_path, state, keys)
    assert first.tokens.verify(open_token_authority(state).issue("reviews")).service == "reviews"
    assert CertificateAuthority.open(state, "demo").fingerprint == first.ca.fingerprint
    aside = (state / ROOT_KEY).with_name(ROOT_KEY.name + ".replaced")
    assert (
        CertificateAuthority.from_files(
            (state / ROOT_CERT).with_name(ROOT_CERT.name + ".replaced"), aside, "demo"
        ).fingerprint
        == ran_alone.fingerprint
    )


async def test_the_first_replica_offers_the_ca_and_token_key_of_its_state_dir(
    spec: MeshSpec, tmp_path: Path
) -> None:
    state = tmp_path / "alone"
    ran_alone = CertificateAuthority.open(state, "demo")
    old_token = TokenAuthority.open(state, "demo", ran_alone.fingerprint).issue("reviews")
    keys = MemoryStore().keys
    await open_shared_identity(spec, tmp_path, state, keys)
    other = await open_shared_identity(spec, tmp_path, tmp_path / "other", keys)
    assert other.ca.fingerprint == ran_alone.fingerprint
    assert other.tokens.verify(old_token).service == "reviews"


async def test_a_replica_of_another_store_refuses_the_tokens(
    spec: MeshSpec, tmp_path: Path
) -> None:
    ours = await open_shared_identity(spec, tmp_path, tmp_path / "a", MemoryStore().keys)
    theirs = await open_shared_identity(spec, tmp_path, tmp_path / "b", MemoryStore().keys)
    assert ours.ca.fingerprint != theirs.ca.fingerprint
    with pytest.raises(TokenSignatureInvalid):
        ours.tokens.verify(theirs.tokens.issue("reviews"))


async def test_tokens_from_the_store_are_those_of_the_mesh_the_replicas_opened(
    spec: MeshSpec, tmp_path: Path
) -> None:
    keys = MemoryStore().keys
    with pytest.raises(IdentityError, match="no replica has opened"):
        await shared_token_authority(keys, tmp_path / "cli")
    replica = await open_shared_identity(spec, tmp_path, tmp_path / "replica", keys)
    issued = (await shared_token_authority(keys, tmp_path / "cli")).issue("reviews")
    grant = replica.tokens.verify(issued)
    assert (grant.mesh, grant.ca_fingerprint) == ("demo", replica.ca.fingerprint)


async def test_a_token_revoked_through_the_store_is_refused_once_followed(
    spec: MeshSpec, tmp_path: Path
) -> None:
    keys = MemoryStore().keys
    replica = await open_shared_identity(spec, tmp_path, tmp_path / "replica", keys)
    token = replica.tokens.issue("reviews")
    revocations = follow_revocations(keys)
    assert await anext(revocations) == frozenset()
    await keys.put(REVOKED_PREFIX + read_token(token).token_id, b"")
    replica.tokens.shared_revocations = await anext(revocations)
    with pytest.raises(TokenRevoked):
        replica.tokens.verify(token)
    assert replica.tokens.verify(replica.tokens.issue("reviews")).service == "reviews"
