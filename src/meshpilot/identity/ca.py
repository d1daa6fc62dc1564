"""The mesh's certificate authority: it signs workload CSRs and the control plane's own servers.

Either a root generated on first start and kept in the state directory (`ca/root-cert.pem` and
`ca/root-key.pem`, 0600), or a plugged-in CA (`security.ca: {cert, key}` in the mesh file): `cert`
holds the signing certificate, optionally followed by its chain up to the root; `key` its private
key (ECDSA or RSA, unencrypted, mode 0600). A plugged-in CA is checked before use: the key matches
the certificate, the certificate is a CA allowed to sign certificates, each certificate of the
chain is issued by the next, and none has expired.

Workload keys never reach the CA (as with istio-agent and istiod): the sidecar sends a CSR, and the
CA signs the identity the caller proved with its join token, whatever the CSR's subject or SANs
ask for. Leaves are ECDSA P-256 only, short-lived, with one URI SAN (the SPIFFE ID), an empty
subject (the SAN is then critical, as RFC 5280 requires) and both clientAuth and serverAuth, since
every sidecar is a TLS client and server. The trust anchor a sidecar pins is the last certificate
of the chain (the root when it is known): `fingerprint` is the SHA-256 of its DER encoding.

Speed: the key object, issuer name and the constant extensions are built once, so a signature
costs one CSR parse, one ECDSA verify and one ECDSA sign (bench/ca.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from meshpilot.identity.errors import CaError, CsrRejected
from meshpilot.identity.lifetimes import DEFAULT_TTL, MAX_TTL, MIN_TTL
from meshpilot.identity.spiffe import SpiffeId, check_trust_domain
from meshpilot.identity.state import create_dir, read_file, write_file

ROOT_LIFETIME = dt.timedelta(days=10 * 365)
# Leaves are valid from a minute ago, so that a peer whose clock is a little behind accepts them.
CLOCK_SKEW = dt.timedelta(minutes=1)
ROOT_CERT = Path("ca") / "root-cert.pem"
ROOT_KEY = Path("ca") / "root-key.pem"

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
_PEM = serialization.Encoding.PEM


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """digitalSignature (ECDSA TLS handshakes), and for a CA keyCertSign and cRLSign."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


_WORKLOAD_EKU = x509.ExtendedKeyUsage(
    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
)
_SERVER_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A signed leaf and the PEM chain to hand to Envoy: the leaf, then the CA chain."""

    certificate: x509.Certificate
    chain_pem: bytes


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """A key made here (for the control plane's own servers) and its certificate chain."""

    key_pem: bytes
    certificate: x509.Certificate
    chain_pem: bytes


class CertificateAuthority:
    def __init__(self, key: CaKey, chain: Sequence[x509.Certificate], trust_domain: str) -> None:
        _check_ca(key, chain)
        self.trust_domain = check_trust_domain(trust_domain)
        self._key = key
        self._chain = tuple(chain)
        self._chain_pem = b"".join(cert.public_bytes(_PEM) for cert in chain)
        signer = chain[0]
        self._issuer = signer.subject
        self._not_after = signer.not_valid_after_utc
        self._constant_extensions = [
            x509.Extension(
                ExtensionOID.BASIC_CONSTRAINTS,
                True,
                x509.BasicConstraints(ca=False, path_length=None),
            ),
            x509.Extension(ExtensionOID.KEY_USAGE, True, _key_usage(ca=False)),
            x509.Extension(ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False, _authority_key_id(signer)),
        ]

    @classmethod
    def open(cls, state_dir: Path, trust_domain: str) -> CertificateAuthority:
        """The root kept in `state_dir`, generated (ECDSA P-256) if there is none yet."""
        cert_path, key_path = state_dir / ROOT_CERT, state_dir / ROOT_KEY
        if not cert_path.parent.exists():
            cert_pem, key_pem = new_root_pem()

            def fill(directory: Path) -> None:
                write_file(directory / ROOT_KEY.name, key_pem, secret=True)
                write_file(directory / ROOT_CERT.name, cert_pem, secret=False)

            if create_dir(cert_path.parent, fill):
                return cls.from_pem(cert_pem, key_pem, trust_domain)
        return cls.from_files(cert_path, key_path, trust_domain)

    @classmethod
    def from_files(cls, cert: Path, key: Path, trust_domain: str) -> CertificateAuthority:
        """A CA from PEM files: `cert` (the CA certificate, then its chain), `key` (its key)."""
        cert_pem, key_pem = read_file(cert, secret=False), read_file(key, secret=True)
        return cls.from_pem(cert_pem, key_pem, trust_domain, (f"'{cert}'", f"'{key}'"))

    @classmethod
    def from_pem(
        cls,
        cert_pem: bytes,
        key_pem: bytes,
        trust_domain: str,
        names: tuple[str, str] = ("the CA certificate", "the CA key"),
    ) -> CertificateAuthority:
        """A CA from PEM: `cert_pem` (the CA certificate, then its chain), `key_pem` (its key);
        `names` say where they came from, in errors."""
        cert, key = names
        try:
            chain = x509.load_pem_x509_certificates(cert_pem)
        except ValueError:
            raise CaError(f"{cert} holds no PEM certificate") from None
        try:
            loaded = serialization.load_pem_private_key(key_pem, None)
        except TypeError:
            raise CaError(f"{key} is encrypted; give the CA key unencrypted (mode 0600)") from None
        except (ValueError, UnsupportedAlgorithm):
            raise CaError(f"{key} holds no PEM private key") from None
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CaError(f"{key}: the CA key must be ECDSA or RSA")
        try:
            return cls(loaded, chain, trust_domain)
        except CaError as err:
            raise CaError(f"{cert}: {err}") from None

    @property
    def certificate(self) -> x509.Certificate:
        """The certificate that signs leaves (the root, or the plugged-in intermediate)."""
        return self._chain[0]

    @property
    def trust_anchor(self) -> x509.Certificate:
        return self._chain[-1]

    @property
    def chain_pem(self) -> bytes:
        return self._chain_pem

    @property
    def fingerprint(self) -> str:
        """`sha256:<hex>` of the trust anchor: what a join token tells a sidecar to pin."""
        return certificate_fingerprint(self.trust_anchor)

    def sign_csr(
        self,
        csr_pem: bytes,
        service: str,
        ttl: dt.timedelta = DEFAULT_TTL,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """Sign a workload's CSR for `service`, a name the caller has proved (its join token).

        The CSR only contributes its public key, once its signature shows the caller holds the
        private key: its subject and extensions are ignored."""
        spiffe_id = SpiffeId(self.trust_domain, service)
        _check_ttl(ttl)
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
            public_key = csr.public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise CsrRejected("not a PEM certificate signing request") from None
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise CsrRejected("workload keys must be ECDSA P-256")
        if not csr.is_signature_valid:
            raise CsrRejected("the CSR's signature does not match its public key")
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id.uri)])
        certificate = self._issue(public_key, x509.Name([]), san, _WORKLOAD_EKU, ttl, now)
        return IssuedCertificate(certificate, certificate.public_bytes(_PEM) + self._chain_pem)

    def server_certificate(
        self,
        dns_names: Iterable[str],
        ips: Iterable[str | IPv4Address | IPv6Address] = (),
        ttl: dt.timedelta = DEFAULT_TTL,
        now: dt.datetime | None = None,
    ) -> ServerCredentials:
        """A new key and a serverAuth certificate for the control plane's xDS or mixer server."""
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        try:
            names += [x509.IPAddress(ip_address(ip)) for ip in ips]
        except ValueError as err:
            raise CaError(str(err)) from None
        if not names:
            raise CaError("a server certificate needs at least one DNS name or IP address")
        _check_ttl(ttl)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshpilot")])
        san = x509.SubjectAlternativeName(names)
        certificate = self._issue(key.public_key(), subject, san, _SERVER_EKU, ttl, now)
        chain = certificate.public_bytes(_PEM) + self._chain_pem
        return ServerCredentials(_private_pem(key), certificate, chain)

    def _issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        subject: x509.Name,
        san: x509.SubjectAlternativeName,
        eku: x509.ExtendedKeyUsage,
        ttl: dt.timedelta,
        now: dt.datetime | None,
    ) -> x509.Certificate:
        now = now or dt.datetime.now(dt.UTC)
        not_after = min(now + ttl, self._not_after)
        if not_after <= now:
            raise CaError("the CA certificate has expired")
        extensions = [
            *self._constant_extensions,
            x509.Extension(ExtensionOID.EXTENDED_KEY_USAGE, False, eku),
            # An empty subject makes the SAN the only name: RFC 5280 then wants it critical.
            x509.Extension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, not subject, san),
        ]
        builder = x509.CertificateBuilder(
            issuer_name=self._issuer,
            subject_name=subject,
            public_key=public_key,
            serial_number=x509.random_serial_number(),
            not_valid_before=now - CLOCK_SKEW,
            not_valid_after=not_after,
            extensions=extensions,
        )
        return builder.sign(self._key, hashes.SHA256())


def load_ca(
    trust_domain: str, state_dir: Path, plugged_in: tuple[Path, Path] | None = None
) -> CertificateAuthority:
    """The mesh's CA: the plugged-in (cert, key) files when given, else the state dir's root."""
    if plugged_in is not None:
        return CertificateAuthority.from_files(*plugged_in, trust_domain)
    return CertificateAuthority.open(state_dir, trust_domain)


def new_root_pem() -> tuple[bytes, bytes]:
    """A new self-signed root (ECDSA P-256): its certificate and its key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    root = _self_signed_root(key, dt.datetime.now(dt.UTC))
    return root.public_bytes(_PEM), _private_pem(key)


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    der = certificate.public_bytes(serialization.Encoding.DER)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _check_ttl(ttl: dt.timedelta) -> None:
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise CaError(f"certificate lifetime {ttl} is outside {MIN_TTL} .. {MAX_TTL.days} days")


def _check_ca(key: CaKey, chain: Sequence[x509.Certificate]) -> None:
    if not chain:
        raise CaError("no CA certificate given")
    signer = chain[0]
    if _spki(key.public_key()) != _spki(signer.public_key()):
        raise CaError("the CA key does not belong to the CA certificate")
    constraints = _extension(signer, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CaError("the certificate is not a CA certificate (basicConstraints CA:TRUE)")
    usage = _extension(signer, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise CaError("the CA certificate may not sign certificates (keyUsage lacks keyCertSign)")
    now = dt.datetime.now(dt.UTC)
    for cert, issuer in itertools.pairwise(chain):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, UnsupportedAlgorithm) as err:
            raise CaError(
                f"'{cert.subject.rfc4514_string()}' is not issued by the next "
                f"certificate of the chain: {err}"
            ) from None
    for cert in chain:
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            raise CaError(
                f"'{cert.subject.rfc4514_string()}' is not valid now (valid "
                f"{cert.not_valid_before_utc} .. {cert.not_valid_after_utc})"
            )


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _authority_key_id(signer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    subject_key_id = _extension(signer, x509.SubjectKeyIdentifier)
    if subject_key_id is not None:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(subject_key_id)
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key())  # type: ignore[arg-type]


def _self_signed_root(key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshpilot"),
            x509.NameAttribute(NameOID.COMMON_NAME, "meshpilot mesh root CA"),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .issuer_name(name)
        .subject_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + ROOT_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )


def _private_pem(key: CaKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _spki(public_key: object) -> bytes:
    assert isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
