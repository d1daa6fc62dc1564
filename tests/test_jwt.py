"""Request authentication: `request_authentication` validated with places, built into the IR
with its JWKS file's text, translated to jwt_authn and RBAC metadata matchers, and the verified
payload's claims as the mixer's hooks see them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2
from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf import json_format, struct_pb2

from meshpilot.mesh.diagnostics import MeshInvalid
from meshpilot.mesh.load import load_mesh
from meshpilot.model import ir, names
from meshpilot.model.match import policy_matches
from meshpilot.policy.authz import request_of
from meshpilot.translator.build import IrBuilder, build_ir
from meshpilot.translator.envoy import jwt_authn, rbac
from meshpilot.translator.envoy.filter_plugin import FilterContext
from tests.support.controlplane import running_control_plane
from tests.support.jwt import Issuer
from tests.support.wait import wait_for_async

ISSUER = "https://auth.example.com"
MESH = f"""\
mesh: m
services:
  orders:
    port: 9080
    request_authentication:
      jwt:
        - issuer: {ISSUER}
          audiences: [orders]
          jwks_file: keys/jwks.json
          forward: true
          from_headers: [{{name: X-Token, prefix: "Bearer "}}]
          from_params: [token]
policies:
  - name: admins
    service: orders
    action: allow
    request_principals: ["{ISSUER}/ann", "*"]
    claims: {{groups: [admins, ops]}}
"""


def write(tmp_path: Path, mesh: str = MESH, jwks: str | None = None) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "jwks.json").write_text(jwks or Issuer(ISSUER).jwks_text())
    path = tmp_path / "mesh.yaml"
    path.write_text(mesh)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(MeshInvalid) as raised:
        load_mesh(path)
    return [problem.format() for problem in raised.value.problems]


def test_a_service_and_its_policies_become_providers_principals_and_claims(
    tmp_path: Path,
) -> None:
    path = write(tmp_path)
    mesh = build_ir(load_mesh(path), tmp_path)
    orders = mesh.service("orders")
    assert orders is not None
    (provider,) = orders.jwt
    assert provider.jwks == (tmp_path / "keys" / "jwks.json").read_text()
    assert provider.jwks_file == str((tmp_path / "keys" / "jwks.json").resolve())
    assert (provider.issuer, provider.audiences, provider.forward) == (ISSUER, ("orders",), True)
    assert provider.from_headers == (ir.JwtHeader("x-token", "Bearer "),)
    assert provider.from_params == ("token",)
    (policy,) = mesh.policies
    assert policy.principals == (ir.RequestPrincipal(ISSUER, "ann"), ir.RequestPrincipal())
    assert policy.claims == (ir.ClaimMatch("groups", ("admins", "ops")),)


@pytest.mark.parametrize(
    ("jwks", "message"),
    [
        ("{", "is not JSON"),
        ('{"keys": []}', "is not a JWKS: it needs a non-empty list 'keys'"),
        ('{"keys": [{"n": "x"}]}', "keys[0] has no 'kty' of RSA, EC, oct, OKP"),
    ],
)
def test_a_jwks_file_that_is_no_jwks_is_refused_in_place(
    tmp_path: Path, jwks: str, message: str
) -> None:
    path = write(tmp_path, jwks=jwks)
    (found,) = problems(path)
    assert found.startswith(f"{path}:9:22: services.orders.request_authentication.jwt[0].jwks_file")
    assert message in found


def test_a_missing_jwks_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MESH.replace("keys/jwks.json", "keys/gone.json"))
    assert problems(path) == [
        f"{path}:9:22: services.orders.request_authentication.jwt[0].jwks_file: "
        f"'{tmp_path}/keys/gone.json' does not exist"
    ]


def test_bad_rules_and_policies_on_tokens_are_refused_in_place(tmp_path: Path) -> None:
    mesh = f"""\
mesh: m
services:
  orders:
    port: 9080
    protocol: tcp
    request_authentication:
      jwt:
        - {{issuer: {ISSUER}, jwks_file: keys/jwks.json}}
        - {{issuer: {ISSUER}, jwks_file: keys/jwks.json}}
        - {{issuer: "", jwks_file: keys/jwks.json}}
  plain: {{port: 8080}}
policies:
  - {{name: a, service: orders, action: allow, request_principals: [https://other/ann]}}
  - {{name: b, service: plain, action: allow, claims: {{group: [admins]}}}}
  - {{name: c, service: orders, action: deny, request_principals: [ann]}}
"""
    path = write(tmp_path, mesh)
    assert problems(path) == [
        f"{path}:{place}: {problem}"
        for place, problem in [
            (
                "6:5",
                "services.orders.request_authentication: request authentication applies to "
                "HTTP, not tcp",
            ),
            (
                "9:20",
                f"services.orders.request_authentication.jwt[1].issuer: issuer '{ISSUER}' "
                "is already verified by jwt[0]",
            ),
            ("10:20", "services.orders.request_authentication.jwt[2].issuer: must not be empty"),
            (
                "13:68",
                "policies[0].request_principals[0]: issuer 'https://other' is not one "
                f"that service 'orders' verifies ({ISSUER})",
            ),
            (
                "14:46",
                "policies[1].claims: service 'plain' verifies no tokens: give it "
                "'request_authentication' to match on them",
            ),
            (
                "15:67",
                "policies[2].request_principals[0]: 'ann' is not ISSUER/SUBJECT, "
                "ISSUER/* or * (e.g. https://auth.example.com/ann)",
            ),
        ]
    ]


def test_a_jwks_file_changed_since_is_read_again_by_the_next_build(tmp_path: Path) -> None:
    path = write(tmp_path)
    spec, builder = load_mesh(path), IrBuilder()
    first = builder.build(spec, tmp_path, secure=False).service("orders")
    (tmp_path / "keys" / "jwks.json").write_text(Issuer(ISSUER, kid="k2").jwks_text())
    again = builder.build(spec, tmp_path, secure=False).service("orders")
    assert first is not None and again is not None
    assert again.jwt[0].jwks != first.jwt[0].jwks
    assert '"k2"' in again.jwt[0].jwks


PROVIDER = ir.JwtProvider(ISSUER, "/keys/jwks.json", '{"keys": [{"kty": "RSA"}]}', ("orders",))


def test_jwt_authn_verifies_any_issuers_token_or_none_at_all() -> None:
    other = dataclasses.replace(PROVIDER, issuer="https://b.example.com", forward=True)
    service = ir.Service("orders", 9080, "http", jwt=(PROVIDER, other))
    config = jwt_authn.FILTER.config(FilterContext("orders", service))
    assert isinstance(config, config_pb2.JwtAuthentication)
    assert sorted(config.providers) == [ISSUER, "https://b.example.com"]
    built = config.providers[ISSUER]
    assert built.local_jwks.inline_string == PROVIDER.jwks
    assert (list(built.audiences), built.forward) == (["orders"], False)
    assert built.payload_in_metadata == names.JWT_PAYLOAD
    (rule,) = config.rules
    assert rule.match.prefix == "/"
    required = rule.requires.requires_any.requirements
    assert [r.provider_name for r in required[:2]] == [ISSUER, "https://b.example.com"]
    assert required[2].HasField("allow_missing")  # no token passes; an invalid one gets 401
    assert (
        jwt_authn.FILTER.config(FilterContext("orders", dataclasses.replace(service, jwt=())))
        is None
    )


def _metadata(principal: rbac_pb2.Principal) -> list[tuple[list[str], dict[str, object]]]:
    """Every metadata matcher under the principal: its path and value matcher (as JSON)."""
    found = []
    if principal.HasField("metadata"):
        matcher = principal.metadata
        assert matcher.filter == names.JWT_FILTER
        path = [segment.key for segment in matcher.path]
        found.append((path, json_format.MessageToDict(matcher.value)))
    for child in [*principal.and_ids.ids, *principal.or_ids.ids]:
        found += _metadata(child)
    return found


def test_rbac_matches_principals_and_claims_on_the_verified_payload() -> None:
    policy = ir.Policy(
        "p",
        "orders",
        "allow",
        principals=(ir.RequestPrincipal(ISSUER, "ann"), ir.RequestPrincipal()),
        claims=(ir.ClaimMatch("groups", ("admins",)),),
    )
    principal = rbac.policy_principal(policy, None)
    assert len(principal.and_ids.ids) == 2  # any of the principals, and the claim
    exact = {"stringMatch": {"exact": "admins"}}
    assert _metadata(principal) == [
        (["payload", "iss"], {"stringMatch": {"exact": ISSUER}}),
        (["payload", "sub"], {"stringMatch": {"exact": "ann"}}),
        (["payload", "iss"], {"presentMatch": True}),
        (
            ["payload", "groups"],
            {"orMatch": {"valueMatchers": [exact, {"listMatch": {"oneOf": exact}}]}},
        ),
    ]
    anyone = ir.Policy("q", "orders", "allow")
    assert rbac.policy_principal(anyone, None) == rbac_pb2.Principal(any=True)


def test_the_mixer_matches_principals_and_claims_as_envoy_does() -> None:
    policy = ir.Policy(
        "p",
        "orders",
        "custom",
        principals=(ir.RequestPrincipal(ISSUER, None),),
        claims=(ir.ClaimMatch("groups", ("admins",)), ir.ClaimMatch("tier", ("gold",))),
    )

    def matches(claims: dict[str, object] | None) -> bool:
        return policy_matches(policy, None, "GET", "/", {}, claims)

    admin = {"iss": ISSUER, "sub": "ann", "groups": ["dev", "admins"], "tier": "gold"}
    assert matches(admin)
    assert not matches({**admin, "groups": ["dev"]})
    assert not matches({**admin, "tier": "silver"})
    assert not matches({**admin, "iss": "https://other"})
    assert not matches(None)  # no verified token


def test_a_hook_sees_the_verified_payload_and_principal() -> None:
    payload = struct_pb2.Struct()
    payload.update({"iss": ISSUER, "sub": "ann", "exp": 1800000000, "groups": ["admins"]})
    metadata = base_pb2.Metadata()
    metadata.filter_metadata[names.JWT_FILTER].fields[names.JWT_PAYLOAD].struct_value.CopyFrom(
        payload
    )
    check = external_auth_pb2.CheckRequest()
    check.attributes.metadata_context.CopyFrom(metadata)
    check.attributes.request.http.path = "/orders"
    request = request_of(check, "orders")
    assert request.claims == {"iss": ISSUER, "sub": "ann", "exp": 1800000000, "groups": ["admins"]}
    assert request.principal == f"{ISSUER}/ann"
    anonymous = request_of(external_auth_pb2.CheckRequest(), "orders")
    assert (anonymous.claims, anonymous.principal) == ({}, None)


async def test_the_control_plane_applies_a_changed_jwks_file_and_refuses_a_broken_one(
    tmp_path: Path,
) -> None:
    write(tmp_path)  # keys/jwks.json
    jwks = tmp_path / "keys" / "jwks.json"
    async with running_control_plane(tmp_path, MESH) as plane:
        first = plane.status.version

        def keys() -> str:
            service = plane.cache.mesh.service("orders")
            return service.jwt[0].jwks if service is not None else ""

        rotated = Issuer(ISSUER, kid="k2").jwks_text()

        def rotated_keys_applied() -> bool:
            if keys() == rotated:
                return True
            jwks.write_text(rotated)  # again: the watcher may not have been watching yet
            return False

        await wait_for_async(rotated_keys_applied, 5, 0.2, "the new keys applied")
        assert plane.status.version != first
        jwks.write_text("{")
        await wait_for_async(
            lambda: plane.status.problems != [], 5, 0.01, "the broken file refused"
        )
        assert keys() == rotated  # the last good keys keep serving
        assert "jwt[0].jwks_file: '" in plane.status.problems[0]
