"""The sidecar's side: its key and CSR, checking the signed chain, renewal."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509

from meshpilot.identity.agent import (
    CertificateRefused,
    Credentials,
    WorkloadKey,
    renewal_time,
)
from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.spiffe import SpiffeId
from tests.support.certs import workload_credentials

REVIEWS = SpiffeId("demo", "reviews")


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.open(tmp_path / "ca-state", "demo")


def credentials(ca: CertificateAuthority, ttl: dt.timedelta = dt.timedelta(hours=1)) -> Credentials:
    return workload_credentials(ca, "reviews", ttl)


def test_signed_chain_is_accepted(now: dt.datetime, ca: CertificateAuthority) -> None:
    key = WorkloadKey()
    csr = x509.load_pem_x509_csr(key.csr())
    assert csr.public_key() == key.key.public_key()
    issued = ca.sign_csr(key.csr(), "reviews", now=now)
    accepted = key.accept(issued.chain_pem, ca.fingerprint, REVIEWS, now)
    assert accepted.certificate == issued.certificate
    assert accepted.anchor == ca.trust_anchor


def test_chain_from_another_ca_is_refused(
    now: dt.datetime, ca: CertificateAuthority, tmp_path: Path
) -> None:
    rogue = CertificateAuthority.open(tmp_path / "rogue", "demo")
    key = WorkloadKey()
    chain = rogue.sign_csr(key.csr(), "reviews", now=now).chain_pem
    with pytest.raises(CertificateRefused, match="pinned CA"):
        key.accept(chain, ca.fingerprint, REVIEWS, now)


def test_certificate_for_another_identity_is_refused(
    now: dt.datetime, ca: CertificateAuthority
) -> None:
    key = WorkloadKey()
    chain = ca.sign_csr(key.csr(), "ratings", now=now).chain_pem
    with pytest.raises(CertificateRefused, match="exactly spiffe://demo/service/reviews"):
        key.accept(chain, ca.fingerprint, REVIEWS, now)


def test_certificate_for_another_key_is_refused(now: dt.datetime, ca: CertificateAuthority) -> None:
    chain = ca.sign_csr(WorkloadKey().csr(), "reviews", now=now).chain_pem
    with pytest.raises(CertificateRefused, match="this instance's key"):
        WorkloadKey().accept(chain, ca.fingerprint, REVIEWS, now)


def test_expired_certificate_is_refused(now: dt.datetime, ca: CertificateAuthority) -> None:
    key = WorkloadKey()
    chain = ca.sign_csr(key.csr(), "reviews", dt.timedelta(minutes=1), now=now).chain_pem
    with pytest.raises(CertificateRefused, match="does not verify"):
        key.accept(chain, ca.fingerprint, REVIEWS, now + dt.timedelta(minutes=2))


def test_garbage_is_refused(now: dt.datetime, ca: CertificateAuthority) -> None:
    with pytest.raises(CertificateRefused, match="no PEM"):
        WorkloadKey().accept(b"nothing", ca.fingerprint, REVIEWS, now)


@pytest.mark.parametrize(("jitter", "seconds"), [(0.0, 30), (1.0, 24), (0.5, 27)])
def test_renewal_at_about_half_the_lifetime(
    now: dt.datetime, ca: CertificateAuthority, jitter: float, seconds: int
) -> None:
    creds = workload_credentials(ca, "reviews", dt.timedelta(seconds=60), now)
    assert renewal_time(creds, lambda: jitter) == now + dt.timedelta(seconds=seconds)
