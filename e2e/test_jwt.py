"""Request authentication: the destination's Envoy verifies JWTs against a JWKS file (issuer,
audience, expiry, signature), and policies match the verified token's principal and claims."""

from __future__ import annotations

from collections.abc import Callable

from harness.client import MeshClient
from harness.mesh import Instance, MeshEnv
from harness.wait import HttpReply, wait_for

from tests.support.jwt import Issuer

ISSUER = "https://auth.example.com"
MESH = f"""
mesh: jwt
services:
  frontend: {{port: 8080}}
  orders:
    port: 9080
    request_authentication:
      jwt:
        - {{issuer: "{ISSUER}", audiences: [orders], jwks_file: keys/jwks.json}}
"""
POLICIES = f"""
policies:
  - name: signed-in-orders
    service: orders
    action: allow
    request_principals: ["{ISSUER}/*"]
    to: {{paths: [/orders*]}}
  - name: admins-only
    service: orders
    action: allow
    claims: {{groups: [admins]}}
    to: {{paths: [/admin*]}}
  - name: no-interns
    service: orders
    action: custom
    claims: {{groups: [interns]}}
    hook: hooks/orders.py:deny
  - name: stamp-principal
    service: orders
    action: custom
    to: {{paths: [/orders*]}}
    hook: hooks/orders.py:stamp
"""
HOOKS = """from meshpilot.policy import Decision

def deny(request):
    return False

def stamp(request):
    groups = ",".join(request.claims.get("groups", []))
    return Decision(True, headers={"x-principal": request.principal or "-", "x-groups": groups})
"""


def start(mesh_env: MeshEnv, issuer: Issuer, mesh: str = MESH) -> Instance:
    (mesh_env.tmp / "keys").mkdir()
    (mesh_env.tmp / "keys" / "jwks.json").write_text(issuer.jwks_text())
    (mesh_env.tmp / "hooks").mkdir()
    (mesh_env.tmp / "hooks" / "orders.py").write_text(HOOKS)
    path = mesh_env.write_mesh(mesh)
    if "custom" in mesh:
        mesh_env.start_with_mixer(path)
    else:
        mesh_env.start_control_plane(path)
    frontend = mesh_env.start_instance("frontend", "v1")
    orders = mesh_env.start_instance("orders", "v1")
    frontend.admin.wait_hosts("outbound|9080||orders", [orders.inbound])
    return frontend


def bearer(client: MeshClient) -> Callable[..., HttpReply]:
    """GET orders with the token, if any, as `Authorization: Bearer`."""

    def get(path: str, token: str | None = None) -> HttpReply:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return client.get("orders", path, **headers)

    return get


def test_a_valid_token_passes_and_a_bad_one_is_refused(mesh_env: MeshEnv) -> None:
    issuer = Issuer(ISSUER)
    impostor = Issuer(ISSUER, kid=issuer.kid)  # same issuer and key id, another key
    frontend = start(mesh_env, issuer)
    with frontend.client() as client:
        get = bearer(client)
        valid = get("/orders/1", issuer.token())
        wrong_issuer = get("/orders/1", Issuer("https://other.example.com").token())
        wrong_audience = get("/orders/1", issuer.token(aud="billing"))
        expired = get("/orders/1", issuer.token(ttl=-3600))
        bad_signature = get("/orders/1", impostor.token())
        anonymous = get("/orders/1")
    assert valid.status == 200
    assert "authorization" not in valid.json()["headers"]  # not forwarded by default
    assert wrong_issuer.status == 401
    # Envoy answers a valid token for another audience 403 (so does Istio, which runs it).
    assert (wrong_audience.status, wrong_audience.text) == (403, "Audiences in Jwt are not allowed")
    assert expired.status == 401
    assert bad_signature.status == 401
    assert anonymous.status == 200  # no token, no policy asking for one: allowed, as in Istio


def test_policies_match_principals_and_claims_and_hooks_see_them(mesh_env: MeshEnv) -> None:
    issuer = Issuer(ISSUER)
    frontend = start(mesh_env, issuer, MESH + POLICIES)
    admin = issuer.token("root", groups=["dev", "admins"])
    developer = issuer.token("ann", groups=["dev"])
    intern = issuer.token("bob", groups=["interns"])
    with frontend.client() as client:
        get = bearer(client)
        signed_in = get("/orders/1", developer)
        anonymous = get("/orders/1")
        as_admin, as_developer, unsigned = (
            get("/admin", admin),
            get("/admin", developer),
            get("/admin"),
        )
        as_intern = get("/orders/1", intern)
    assert signed_in.status == 200
    assert signed_in.json()["headers"]["x-principal"] == f"{ISSUER}/ann"
    assert signed_in.json()["headers"]["x-groups"] == "dev"
    assert anonymous.status == 403  # the path needs a principal
    assert (as_admin.status, as_developer.status, unsigned.status) == (200, 403, 403)
    assert as_intern.status == 403  # a custom policy on a claim, decided in the mixer


def test_rotated_keys_reach_the_sidecars_without_saving_the_mesh(mesh_env: MeshEnv) -> None:
    old, new = Issuer(ISSUER), Issuer(ISSUER, kid="k2")
    frontend = start(mesh_env, old)
    with frontend.client() as client:
        get = bearer(client)
        assert get("/orders/1", old.token()).status == 200
        (mesh_env.tmp / "keys" / "jwks.json").write_text(new.jwks_text())
        wait_for(lambda: get("/orders/1", new.token()).status == 200, 10, message="new keys")
        assert get("/orders/1", old.token()).status == 401


def test_tokens_from_a_header_of_ones_own_are_forwarded_when_asked(mesh_env: MeshEnv) -> None:
    issuer = Issuer(ISSUER)
    rule = "jwks_file: keys/jwks.json, forward: true, from_headers: [{name: x-token}]"
    frontend = start(mesh_env, issuer, MESH.replace("jwks_file: keys/jwks.json", rule))
    token = issuer.token()
    with frontend.client() as client:
        valid = client.get("orders", "/orders/1", **{"x-token": token})
        forged = client.get("orders", "/orders/1", **{"x-token": Issuer(ISSUER).token()})
    assert valid.status == 200 and valid.json()["headers"]["x-token"] == token
    assert forged.status == 401
