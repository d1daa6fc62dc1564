"""The certificate service on the control plane's xDS port: real gRPC, real tokens, real crypto.

A control plane is started in-process with a state directory (and TLS unless a test says
otherwise); requests are sent as a sidecar would, over a channel trusting the mesh CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from meshpilot.controlplane import ControlPlane
from meshpilot.errors import MeshpilotError
from meshpilot.identity.admission import AUTHORIZATION
from meshpilot.identity.authority import MeshIdentity
from meshpilot.identity.ca import CertificateAuthority
from meshpilot.identity.service import (
    FULL_METHOD,
    CertificateResponse,
    decode_response,
    encode_request,
)
from meshpilot.identity.tokens import TokenAuthority, read_token
from meshpilot.model.proxies import Proxy
from meshpilot.xds.types import TYPES
from tests.support.client import AdsClient, sidecar_node
from tests.support.controlplane import running_control_plane

MESH = """\
mesh: demo
services:
  reviews: {port: 9080}
  ratings: {port: 9081}
security: {certificate_ttl: 60s}
"""
SIGNED = "meshpilot_certificates_signed_total"
REFUSED = "meshpilot_certificate_requests_refused_total"


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    async with running_control_plane(tmp_path, MESH, state_dir=tmp_path / "state", tls=True) as cp:
        yield cp


def identity(plane: ControlPlane) -> MeshIdentity:
    assert plane.identity is not None
    return plane.identity


def trusting(plane: ControlPlane) -> grpc.ChannelCredentials:
    anchor = identity(plane).ca.trust_anchor.public_bytes(serialization.Encoding.PEM)
    return grpc.ssl_channel_credentials(root_certificates=anchor)


def csr_for(service: str, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """A CSR that asks for `service` by subject and SAN (the CA is to ignore both)."""
    uri = f"spiffe://demo/service/{service}"
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


async def create_certificate(
    plane: ControlPlane,
    request: bytes,
    token: str | None,
    credentials: grpc.ChannelCredentials | None = None,
) -> CertificateResponse:
    metadata = () if token is None else ((AUTHORIZATION, f"Bearer {token}"),)
    if plane.tls:
        channel = grpc.aio.secure_channel(plane.ads.address, credentials or trusting(plane))
    else:
        channel = grpc.aio.insecure_channel(plane.ads.address)
    async with channel:
        call = channel.unary_unary(FULL_METHOD, response_deserializer=decode_response)
        response: CertificateResponse = await call(request, metadata=metadata, timeout=10)
        return response


async def refused(plane: ControlPlane, request: bytes, token: str | None) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create_certificate(plane, request, token)
    return raised.value.code()


def value(plane: ControlPlane, name: str, **labels: str) -> float:
    return plane.metrics.value(name, labels)


async def test_signs_the_granted_service_whatever_the_csr_asks(plane: ControlPlane) -> None:
    mesh = identity(plane)
    key = ec.generate_private_key(ec.SECP256R1())
    token = mesh.tokens.issue("reviews")
    response = await create_certificate(plane, encode_request(csr_for("ratings", key)), token)

    leaf, *chain = x509.load_pem_x509_certificates(response.certificate_chain)
    assert response.trust_bundle == mesh.ca.trust_anchor.public_bytes(serialization.Encoding.PEM)
    anchor = x509.load_pem_x509_certificate(response.trust_bundle)
    verified = PolicyBuilder().store(Store([anchor])).build_client_verifier().verify(leaf, chain)
    reviews = x509.UniformResourceIdentifier("spiffe://demo/service/reviews")
    assert list(verified.subjects or []) == [reviews]
    assert leaf.subject == x509.Name([])  # the CSR's CN is not copied either
    assert leaf.public_key() == key.public_key()
    assert response.spiffe_id == reviews.value
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == dt.timedelta(seconds=60) + dt.timedelta(minutes=1)  # ttl + clock skew
    assert value(plane, SIGNED) == 1


def tampered(token: str) -> str:
    """The token with its payload claiming another service, signature unchanged."""
    prefix, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["svc"] = "ratings"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{prefix}.{forged}.{signature}"


def revoked(mesh: MeshIdentity, _state: Path) -> str:
    token = mesh.tokens.issue("reviews")
    mesh.tokens.revoke(read_token(token).token_id)
    return token


NOW = dt.datetime.now(dt.UTC)
BAD_TOKENS: dict[str, Callable[[MeshIdentity, Path], str | None]] = {
    "no_token": lambda _mesh, _state: None,
    "token_malformed": lambda _mesh, _state: "not-a-token",
    "token_signature": lambda mesh, _state: tampered(mesh.tokens.issue("reviews")),
    "token_expired": lambda mesh, _state: mesh.tokens.issue(
        "reviews", ttl=dt.timedelta(hours=1), now=NOW - dt.timedelta(hours=2)
    ),
    "token_revoked": revoked,
    "token_wrong_mesh": lambda mesh, state: TokenAuthority.open(
        state, "other", mesh.ca.fingerprint
    ).issue("reviews"),
}


@pytest.mark.parametrize("reason", BAD_TOKENS)
async def test_bad_token_is_unauthenticated_and_counted(
    plane: ControlPlane, tmp_path: Path, reason: str
) -> None:
    mesh = identity(plane)
    token = BAD_TOKENS[reason](mesh, tmp_path / "state")
    request = encode_request(csr_for("reviews", ec.generate_private_key(ec.SECP256R1())))
    assert await refused(plane, request, token) == grpc.StatusCode.UNAUTHENTICATED
    assert value(plane, REFUSED, reason=reason) == 1
    assert value(plane, SIGNED) == 0


def test_the_tampered_token_differs_only_in_its_claims(tmp_path: Path) -> None:
    """The tampering above is a real forgery attempt: same signature, other service."""
    authority = TokenAuthority.open(tmp_path, "demo", "sha256:" + "0" * 64)
    token = authority.issue("reviews")
    forged = tampered(token)
    assert forged.rsplit(".", 1)[1] == token.rsplit(".", 1)[1]
    assert read_token(forged).service == "ratings"


BAD_REQUESTS = {
    "not JSON": b"\x00\x01",
    "no csr": b'{"pem": "x"}',
    "not a CSR": encode_request(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"),
    "an RSA key": encode_request(
        csr_for("reviews", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ),
}


@pytest.mark.parametrize("request_", BAD_REQUESTS.values(), ids=list(BAD_REQUESTS))
async def test_bad_csr_is_invalid_argument(plane: ControlPlane, request_: bytes) -> None:
    token = identity(plane).tokens.issue("reviews")
    assert await refused(plane, request_, token) == grpc.StatusCode.INVALID_ARGUMENT
    assert value(plane, REFUSED, reason="bad_csr") == 1
    assert value(plane, SIGNED) == 0


async def test_plaintext_port_still_wants_a_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with running_control_plane(tmp_path, MESH, state_dir=state) as plane:
        request = encode_request(csr_for("reviews", ec.generate_private_key(ec.SECP256R1())))
        assert await refused(plane, request, None) == grpc.StatusCode.UNAUTHENTICATED
        token = identity(plane).tokens.issue("reviews")
        response = await create_certificate(plane, request, token)
        assert response.spiffe_id == "spiffe://demo/service/reviews"


async def test_tls_port_is_not_plaintext_and_names_its_address(plane: ControlPlane) -> None:
    request = encode_request(csr_for("reviews", ec.generate_private_key(ec.SECP256R1())))
    token = identity(plane).tokens.issue("reviews")
    async with grpc.aio.insecure_channel(plane.ads.address) as channel:
        call = channel.unary_unary(FULL_METHOD, response_deserializer=decode_response)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request, metadata=((AUTHORIZATION, f"Bearer {token}"),), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # Trusting another CA: the handshake fails, nothing is signed.
    other = CertificateAuthority.open(plane.mesh_path.parent / "other", "demo")
    stranger = grpc.ssl_channel_credentials(
        other.trust_anchor.public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create_certificate(plane, request, token, stranger)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert value(plane, SIGNED) == 0


async def test_ads_is_served_over_the_same_tls_port(plane: ControlPlane) -> None:
    proxy = Proxy("reviews~127.0.0.1", "reviews", "127.0.0.1", 8080, ())
    token = identity(plane).tokens.issue("reviews")
    node = sidecar_node(proxy)
    async with AdsClient(plane.ads.address, node, trusting(plane), token) as client:
        response = await client.fetch(TYPES[0].url)
    assert response.type_url == TYPES[0].url
    assert response.resources


def test_tls_needs_a_state_directory(tmp_path: Path) -> None:
    with pytest.raises(MeshpilotError, match="state directory"):
        ControlPlane(tmp_path / "mesh.yaml", "127.0.0.1:1", "127.0.0.1:2", tls=True)


async def test_a_saved_mesh_file_changes_the_certificate_lifetime(plane: ControlPlane) -> None:
    plane.mesh_path.write_text(MESH.replace("60s", "2m"))
    await plane.reload()
    request = encode_request(csr_for("reviews", ec.generate_private_key(ec.SECP256R1())))
    response = await create_certificate(plane, request, identity(plane).tokens.issue("reviews"))
    leaf = x509.load_pem_x509_certificates(response.certificate_chain)[0]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(minutes=3)


BROKEN_MESH = "mesh: demo\nservices: 3\n"


async def test_no_certificates_until_a_mesh_file_is_usable(tmp_path: Path) -> None:
    async with running_control_plane(tmp_path, BROKEN_MESH, state_dir=tmp_path / "s") as plane:
        request = encode_request(csr_for("reviews", ec.generate_private_key(ec.SECP256R1())))
        assert await refused(plane, request, "any") == grpc.StatusCode.UNAVAILABLE
        assert value(plane, REFUSED, reason="no_ca") == 1
        plane.mesh_path.write_text(MESH)
        await plane.reload()
        token = identity(plane).tokens.issue("reviews")
        response = await create_certificate(plane, request, token)
        assert response.spiffe_id == "spiffe://demo/service/reviews"


async def test_tls_needs_a_usable_mesh_file_at_start(tmp_path: Path) -> None:
    with pytest.raises(MeshpilotError, match="TLS on the xDS port needs the mesh CA"):
        async with running_control_plane(tmp_path, BROKEN_MESH, state_dir=tmp_path, tls=True):
            pass
