"""Join tokens with real Ed25519 signatures: what verifies, and every reason one is refused."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshpilot.errors import MeshpilotError
from meshpilot.identity import errors
from meshpilot.identity.tokens import REVOKED, SIGNING_KEY, TokenAuthority, read_token

FINGERPRINT = "sha256:" + "ab" * 32
NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
# Every claim but "kid", which is read last: a generated payload can never be a valid one.
CLAIMS = ("mesh", "svc", "labels", "iat", "exp", "jti", "ca")


@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    return TokenAuthority.open(tmp_path, "demo", FINGERPRINT)


def reencode(token: str, **changes: object) -> str:
    """`token` with its payload changed and its original signature kept."""
    prefix, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims.update(changes)
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    return f"{prefix}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{signature}"


def test_round_trip(authority: TokenAuthority) -> None:
    token = authority.issue("reviews", {"version": "v2", "zone": "a"}, dt.timedelta(hours=1), NOW)
    grant = authority.verify(token, NOW + dt.timedelta(minutes=59))
    assert grant.mesh == "demo"
    assert grant.service == "reviews"
    assert dict(grant.labels) == {"version": "v2", "zone": "a"}
    assert grant.issued_at == NOW
    assert grant.expires_at == NOW + dt.timedelta(hours=1)
    assert grant.ca_fingerprint == FINGERPRINT
    assert grant.key_id == authority.key_id


def test_token_is_compact_and_one_line(authority: TokenAuthority) -> None:
    token = authority.issue("reviews", {"version": "v1"}, now=NOW)
    assert token.startswith("mpt1.") and token.count(".") == 2
    assert len(token) < 400
    assert token.isascii() and not any(c.isspace() for c in token)


def test_each_token_has_its_own_id(authority: TokenAuthority) -> None:
    ids = {read_token(authority.issue("reviews", now=NOW)).token_id for _ in range(20)}
    assert len(ids) == 20


def test_unverified_read_gives_what_a_sidecar_needs(authority: TokenAuthority) -> None:
    grant = read_token(authority.issue("ratings", now=NOW) + "\n")  # as read from a file
    assert (grant.service, grant.ca_fingerprint) == ("ratings", FINGERPRINT)


def test_tampered_payload_is_refused(authority: TokenAuthority) -> None:
    token = authority.issue("reviews", {"version": "v1"}, now=NOW)
    for changes in (
        {"svc": "admin"},
        {"labels": {"version": "v2"}},
        {"exp": int(NOW.timestamp()) + 10**8},
    ):
        with pytest.raises(errors.TokenSignatureInvalid):
            authority.verify(reencode(token, **changes), NOW)


def test_tampered_signature_is_refused(authority: TokenAuthority) -> None:
    token = authority.issue("reviews", now=NOW)
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(errors.TokenSignatureInvalid):
        authority.verify(flipped, NOW)


def test_token_from_another_key_is_refused(tmp_path: Path, authority: TokenAuthority) -> None:
    other = TokenAuthority.open(tmp_path / "other", "demo", FINGERPRINT)
    with pytest.raises(errors.TokenSignatureInvalid, match="another token key"):
        authority.verify(other.issue("reviews", now=NOW), NOW)


def test_forged_key_id_is_still_checked(tmp_path: Path, authority: TokenAuthority) -> None:
    other = TokenAuthority.open(tmp_path / "other", "demo", FINGERPRINT)
    forged = reencode(other.issue("reviews", now=NOW), kid=authority.key_id)
    with pytest.raises(errors.TokenSignatureInvalid, match="does not match"):
        authority.verify(forged, NOW)


def test_expired_token_is_refused(authority: TokenAuthority) -> None:
    token = authority.issue("reviews", ttl=dt.timedelta(minutes=10), now=NOW)
    authority.verify(token, NOW + dt.timedelta(minutes=9, seconds=59))
    with pytest.raises(errors.TokenExpired, match="expired at 2026-01-01 12:10:00Z"):
        authority.verify(token, NOW + dt.timedelta(minutes=10))


def test_revoked_token_is_refused(authority: TokenAuthority) -> None:
    token, kept = authority.issue("reviews", now=NOW), authority.issue("reviews", now=NOW)
    authority.verify(token, NOW)
    authority.revoke(read_token(token).token_id)
    with pytest.raises(errors.TokenRevoked):
        authority.verify(token, NOW)
    assert authority.verify(kept, NOW).service == "reviews"


def test_revocation_by_another_process_is_seen(tmp_path: Path) -> None:
    serving = TokenAuthority.open(tmp_path, "demo", FINGERPRINT)
    token = serving.issue("reviews", now=NOW)
    serving.verify(token, NOW)  # the list is read (and empty) before the revocation
    TokenAuthority.open(tmp_path, "demo", FINGERPRINT).revoke(read_token(token).token_id)
    with pytest.raises(errors.TokenRevoked):
        serving.verify(token, NOW)
    assert (tmp_path / REVOKED).read_text().split() == [read_token(token).token_id]


def test_bad_token_id_cannot_be_revoked(authority: TokenAuthority) -> None:
    with pytest.raises(errors.IdentityError, match="not a token id"):
        authority.revoke("a b\nc")


def test_other_mesh_is_refused(tmp_path: Path, authority: TokenAuthority) -> None:
    same_key_other_mesh = TokenAuthority.open(tmp_path, "prod", FINGERPRINT)
    token = same_key_other_mesh.issue("reviews", now=NOW)
    with pytest.raises(errors.TokenWrongMesh, match="for mesh 'prod', not 'demo'"):
        authority.verify(token, NOW)


def test_key_persists_and_is_private(tmp_path: Path, authority: TokenAuthority) -> None:
    token = authority.issue("reviews", now=NOW)
    reopened = TokenAuthority.open(tmp_path, "demo", FINGERPRINT)
    assert reopened.key_id == authority.key_id
    assert reopened.verify(token, NOW).service == "reviews"
    assert stat.S_IMODE(os.stat(tmp_path / SIGNING_KEY).st_mode) == 0o600


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "hello",
        "mpt1.abc",
        "mpt2.e30.AAAA",
        "mpt1.e30.AAAA",  # {} : fields missing
        "mpt1.!!!.AAAA",
        "a.b.c.d",
        "mpt1." + base64.urlsafe_b64encode(b"[1]").decode().rstrip("=") + ".AAAA",
    ],
)
def test_malformed_tokens_are_refused(authority: TokenAuthority, junk: str) -> None:
    with pytest.raises(errors.TokenMalformed):
        authority.verify(junk, NOW)


def test_wrongly_typed_claims_are_malformed(authority: TokenAuthority) -> None:
    token = authority.issue("reviews", now=NOW)
    for changes in ({"exp": "tomorrow"}, {"labels": ["x"]}, {"svc": "Not A Name"}, {"iat": True}):
        with pytest.raises(errors.TokenMalformed):
            authority.verify(reencode(token, **changes), NOW)


def test_signature_part_must_be_strict_base64url(authority: TokenAuthority) -> None:
    with pytest.raises(errors.TokenMalformed):
        authority.verify(authority.issue("reviews", now=NOW) + "!", NOW)


def test_errors_are_meshpilot_errors(authority: TokenAuthority) -> None:
    with pytest.raises(MeshpilotError):
        authority.verify("nonsense", NOW)


def test_issue_checks_its_input(authority: TokenAuthority) -> None:
    with pytest.raises(errors.IdentityError):
        authority.issue("Bad Name")
    with pytest.raises(errors.IdentityError, match="positive"):
        authority.issue("reviews", ttl=dt.timedelta(0))
    with pytest.raises(errors.IdentityError, match="fingerprint"):
        TokenAuthority.open(Path("/nonexistent"), "demo", "md5:00")


def test_authorities_opened_together_share_one_key(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        opened = list(
            pool.map(lambda _: TokenAuthority.open(tmp_path, "demo", FINGERPRINT), range(16))
        )
    assert len({authority.key_id for authority in opened}) == 1
    assert sorted(p.name for p in (tmp_path / "tokens").iterdir()) == ["signing-key.pem"]


@settings(max_examples=300, deadline=None)
@given(
    junk=st.one_of(
        st.text(),
        st.builds(
            lambda parts: ".".join(["mpt1", *parts]),
            st.lists(st.text("ABCDEFabcdef0123456789-_="), min_size=0, max_size=3),
        ),
    )
)
def test_any_string_is_a_token_error_never_a_crash(junk: str) -> None:
    with pytest.raises(errors.TokenError):
        read_token(junk)


@settings(max_examples=100, deadline=None)
@given(claims=st.dictionaries(st.sampled_from(CLAIMS), st.from_type(object) | st.integers()))
def test_any_payload_is_a_token_error_never_a_crash(claims: dict[str, object]) -> None:
    body = base64.urlsafe_b64encode(json.dumps(claims, default=repr).encode()).decode()
    with pytest.raises(errors.TokenError):
        read_token(f"mpt1.{body.rstrip('=')}.AAAA")
