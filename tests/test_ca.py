"""The mesh CA with real crypto: what it signs, what it refuses, and what survives a restart."""

from __future__ import annotations

import datetime as dt
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshpilot.identity.ca import (
    ROOT_CERT,
    ROOT_KEY,
    CaKey,
    CertificateAuthority,
    certificate_fingerprint,
    load_ca,
)
from meshpilot.identity.errors import CaError, CsrRejected, IdentityError, InvalidSpiffeId

PEM = serialization.Encoding.PEM


def csr_for(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *sans: x509.GeneralName) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(PEM)


def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def verify_client(chain_pem: bytes, anchor: x509.Certificate) -> list[x509.GeneralName]:
    """Verify a workload chain as a TLS server verifies a client: the SANs it proved."""
    leaf, *intermediates = x509.load_pem_x509_certificates(chain_pem)
    verifier = (
        PolicyBuilder().store(Store([anchor])).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    )
    return list(verifier.verify(leaf, intermediates).subjects or [])


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.open(tmp_path, "demo")


# --- signing ----------------------------------------------------------------------------------


def test_leaf_verifies_against_the_root(now: dt.datetime, ca: CertificateAuthority) -> None:
    issued = ca.sign_csr(csr_for(p256()), "reviews", now=now)
    assert verify_client(issued.chain_pem, ca.trust_anchor) == [
        x509.UniformResourceIdentifier("spiffe://demo/service/reviews")
    ]


def test_leaf_does_not_verify_against_another_root(
    now: dt.datetime, ca: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority.open(tmp_path / "other", "demo")
    issued = ca.sign_csr(csr_for(p256()), "reviews", now=now)
    with pytest.raises(VerificationError):
        verify_client(issued.chain_pem, other.trust_anchor)


def test_csr_subject_and_sans_are_ignored(now: dt.datetime, ca: CertificateAuthority) -> None:
    asked = csr_for(
        p256(),
        x509.UniformResourceIdentifier("spiffe://demo/service/admin"),
        x509.DNSName("admin.example.com"),
    )
    leaf = ca.sign_csr(asked, "reviews", now=now).certificate
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier("spiffe://demo/service/reviews")]


def test_leaf_fields(now: dt.datetime, ca: CertificateAuthority) -> None:
    key = p256()
    leaf = ca.sign_csr(csr_for(key), "reviews", now=now).certificate
    assert leaf.public_key() == key.public_key()
    assert leaf.issuer == ca.certificate.subject
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(leaf.signature_hash_algorithm, hashes.SHA256)


def test_chain_is_leaf_then_ca(now: dt.datetime, ca: CertificateAuthority) -> None:
    issued = ca.sign_csr(csr_for(p256()), "reviews", now=now)
    chain = x509.load_pem_x509_certificates(issued.chain_pem)
    assert chain == [issued.certificate, ca.certificate]


def test_default_lifetime_is_24h(now: dt.datetime, ca: CertificateAuthority) -> None:
    leaf = ca.sign_csr(csr_for(p256()), "reviews", now=now).certificate
    assert leaf.not_valid_after_utc == now + dt.timedelta(hours=24)
    assert leaf.not_valid_before_utc < now


@pytest.mark.parametrize("seconds", [60, 3600, 90 * 86400])
def test_lifetime_honours_ttl(now: dt.datetime, ca: CertificateAuthority, seconds: int) -> None:
    ttl = dt.timedelta(seconds=seconds)
    leaf = ca.sign_csr(csr_for(p256()), "reviews", ttl, now=now).certificate
    assert leaf.not_valid_after_utc == now + ttl


def test_expired_leaf_does_not_verify(now: dt.datetime, ca: CertificateAuthority) -> None:
    past = now - dt.timedelta(hours=1)
    issued = ca.sign_csr(csr_for(p256()), "reviews", dt.timedelta(minutes=5), now=past)
    with pytest.raises(VerificationError):
        verify_client(issued.chain_pem, ca.trust_anchor)


@pytest.mark.parametrize("ttl", [dt.timedelta(seconds=59), dt.timedelta(days=91)])
def test_lifetime_out_of_range_is_refused(ca: CertificateAuthority, ttl: dt.timedelta) -> None:
    with pytest.raises(CaError, match="lifetime"):
        ca.sign_csr(csr_for(p256()), "reviews", ttl)


def test_rsa_csr_is_refused(ca: CertificateAuthority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(CsrRejected, match="ECDSA P-256"):
        ca.sign_csr(csr_for(key), "reviews")


def test_other_curve_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRejected, match="ECDSA P-256"):
        ca.sign_csr(csr_for(ec.generate_private_key(ec.SECP384R1())), "reviews")


def test_csr_with_a_bad_signature_is_refused(ca: CertificateAuthority) -> None:
    der = bytearray(
        x509.load_pem_x509_csr(csr_for(p256())).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01  # the last byte of the signature's s
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(PEM)
    with pytest.raises(CsrRejected, match="signature"):
        ca.sign_csr(tampered, "reviews")


@pytest.mark.parametrize("junk", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nxx\n"])
def test_garbage_is_refused(ca: CertificateAuthority, junk: bytes) -> None:
    with pytest.raises(CsrRejected, match="not a PEM"):
        ca.sign_csr(junk, "reviews")


def test_invalid_service_name_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(InvalidSpiffeId):
        ca.sign_csr(csr_for(p256()), "Reviews/../admin")


# --- server certificates ----------------------------------------------------------------------


def test_server_certificate_verifies_for_its_names(
    now: dt.datetime, ca: CertificateAuthority
) -> None:
    creds = ca.server_certificate(["xds.mesh.local"], ["127.0.0.1"], now=now)
    leaf, *rest = x509.load_pem_x509_certificates(creds.chain_pem)
    key = serialization.load_pem_private_key(creds.key_pem, None)
    assert key.public_key() == leaf.public_key()
    builder = PolicyBuilder().store(Store([ca.trust_anchor])).time(now)
    builder.build_server_verifier(x509.DNSName("xds.mesh.local")).verify(leaf, rest)
    with pytest.raises(VerificationError):
        builder.build_server_verifier(x509.DNSName("evil.local")).verify(leaf, rest)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_server_certificate_needs_a_name(ca: CertificateAuthority) -> None:
    with pytest.raises(CaError, match="at least one"):
        ca.server_certificate([])
    with pytest.raises(CaError):
        ca.server_certificate(["x"], ["not-an-ip"])


# --- the generated root and its state directory -----------------------------------------------


def test_root_persists_across_restarts(now: dt.datetime, tmp_path: Path) -> None:
    first = CertificateAuthority.open(tmp_path, "demo")
    second = CertificateAuthority.open(tmp_path, "demo")
    assert first.fingerprint == second.fingerprint
    issued = first.sign_csr(csr_for(p256()), "reviews", now=now)
    verify_client(issued.chain_pem, second.trust_anchor)


def test_root_is_a_p256_ca(ca: CertificateAuthority) -> None:
    root = ca.trust_anchor
    assert root.subject == root.issuer
    assert isinstance(root.public_key(), ec.EllipticCurvePublicKey)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert ca.fingerprint == certificate_fingerprint(root)
    assert ca.fingerprint.startswith("sha256:") and len(ca.fingerprint) == 7 + 64


def test_state_files_are_private(tmp_path: Path) -> None:
    CertificateAuthority.open(tmp_path / "state", "demo")
    assert stat.S_IMODE(os.stat(tmp_path / "state" / ROOT_KEY).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "ca").st_mode) == 0o700


def test_readable_key_is_refused(tmp_path: Path) -> None:
    CertificateAuthority.open(tmp_path, "demo")
    os.chmod(tmp_path / ROOT_KEY, 0o640)
    with pytest.raises(IdentityError, match="chmod 600"):
        CertificateAuthority.open(tmp_path, "demo")


def test_half_a_ca_is_not_silently_replaced(tmp_path: Path) -> None:
    CertificateAuthority.open(tmp_path, "demo")
    (tmp_path / ROOT_CERT).unlink()
    with pytest.raises(IdentityError, match="cannot read"):
        CertificateAuthority.open(tmp_path, "demo")


# --- a plugged-in CA --------------------------------------------------------------------------


def ca_certificate(
    name: str,
    key: CaKey,
    issuer: tuple[x509.Certificate, CaKey] | None = None,
    *,
    ca: bool = True,
    cert_sign: bool = True,
) -> x509.Certificate:
    """A CA certificate for `key`, self-signed unless `issuer` (certificate, key) is given."""
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    usage = dict.fromkeys((*unused, "encipher_only", "decipher_only"), False)
    usage |= {"digital_signature": True, "key_cert_sign": cert_sign, "crl_sign": cert_sign}
    return (
        x509.CertificateBuilder(
            issuer_name=issuer_name,
            subject_name=subject,
            public_key=key.public_key(),
            serial_number=x509.random_serial_number(),
            not_valid_before=now - dt.timedelta(days=1),
            not_valid_after=now + dt.timedelta(days=365),
        )
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), False
        )
        .sign(signing_key, hashes.SHA256())
    )


def write_pair(directory: Path, certs: list[x509.Certificate], key: CaKey) -> tuple[Path, Path]:
    cert_file, key_file = directory / "ca-cert.pem", directory / "ca-key.pem"
    cert_file.write_bytes(b"".join(cert.public_bytes(PEM) for cert in certs))
    key_file.write_bytes(
        key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_file.chmod(0o600)
    return cert_file, key_file


def test_plugged_in_intermediate_chains_to_its_root(now: dt.datetime, tmp_path: Path) -> None:
    root_key, intermediate_key = p256(), p256()
    root = ca_certificate("corp root", root_key)
    intermediate = ca_certificate("mesh intermediate", intermediate_key, (root, root_key))
    files = write_pair(tmp_path, [intermediate, root], intermediate_key)
    ca = load_ca("demo", tmp_path / "state", files)
    assert ca.certificate == intermediate
    assert ca.fingerprint == certificate_fingerprint(root)
    issued = ca.sign_csr(csr_for(p256()), "ratings", now=now)
    assert x509.load_pem_x509_certificates(issued.chain_pem)[1:] == [intermediate, root]
    assert verify_client(issued.chain_pem, root) == [
        x509.UniformResourceIdentifier("spiffe://demo/service/ratings")
    ]
    assert not (tmp_path / "state").exists()  # nothing generated when a CA is plugged in


def test_plugged_in_root(now: dt.datetime, tmp_path: Path) -> None:
    key = p256()
    root = ca_certificate("corp root", key)
    ca = CertificateAuthority.from_files(*write_pair(tmp_path, [root], key), "demo")
    verify_client(ca.sign_csr(csr_for(p256()), "a", now=now).chain_pem, root)


def test_plugged_in_rsa_root(now: dt.datetime, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = ca_certificate("rsa root", key)
    ca = CertificateAuthority.from_files(*write_pair(tmp_path, [root], key), "demo")
    verify_client(ca.sign_csr(csr_for(p256()), "a", now=now).chain_pem, root)


def test_key_must_match_the_certificate(tmp_path: Path) -> None:
    root = ca_certificate("corp root", p256())
    with pytest.raises(CaError, match="does not belong"):
        CertificateAuthority.from_files(*write_pair(tmp_path, [root], p256()), "demo")


def test_certificate_must_be_a_ca(tmp_path: Path) -> None:
    key = p256()
    leaf = ca_certificate("not a ca", key, ca=False)
    with pytest.raises(CaError, match="not a CA"):
        CertificateAuthority.from_files(*write_pair(tmp_path, [leaf], key), "demo")


def test_certificate_must_be_allowed_to_sign(tmp_path: Path) -> None:
    key = p256()
    root = ca_certificate("no cert sign", key, cert_sign=False)
    with pytest.raises(CaError, match="keyCertSign"):
        CertificateAuthority.from_files(*write_pair(tmp_path, [root], key), "demo")


def test_chain_must_be_in_order(tmp_path: Path) -> None:
    root_key, intermediate_key = p256(), p256()
    root = ca_certificate("corp root", root_key)
    intermediate = ca_certificate("mesh intermediate", intermediate_key, (root, root_key))
    stranger = ca_certificate("stranger", p256())
    with pytest.raises(CaError, match="not issued by"):
        CertificateAuthority.from_files(
            *write_pair(tmp_path, [intermediate, stranger], intermediate_key), "demo"
        )


def test_missing_or_junk_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("junk")
    (tmp_path / "junk.pem").chmod(0o600)
    with pytest.raises(CaError, match="no PEM certificate"):
        CertificateAuthority.from_files(tmp_path / "junk.pem", tmp_path / "junk.pem", "demo")
    with pytest.raises(IdentityError, match="cannot read"):
        CertificateAuthority.from_files(tmp_path / "nope.pem", tmp_path / "nope.pem", "demo")


def test_control_planes_starting_together_agree_on_one_root(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        opened = list(pool.map(lambda _: CertificateAuthority.open(tmp_path, "demo"), range(16)))
    assert len({ca.fingerprint for ca in opened}) == 1
    assert CertificateAuthority.open(tmp_path, "demo").fingerprint == opened[0].fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca"]  # no temporary left behind
