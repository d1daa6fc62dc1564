"""Request authentication: JWTs a destination verifies (Istio's RequestAuthentication)."""

from __future__ import annotations

from pydantic import Field

from meshpilot.mesh.fields import HeaderName, SpecModel


class JwtHeaderSpec(SpecModel):
    """A header a token is read from, after `prefix` (e.g. `Bearer `)."""

    name: HeaderName
    prefix: str = ""


class JwtRuleSpec(SpecModel):
    """Tokens of one issuer: signed by a key of the JWKS file (relative to the mesh file), for
    one of `audiences` (none: any). Without `from_headers`/`from_params` a token is read from
    `Authorization: Bearer ...` or the `access_token` query parameter, as Envoy and Istio do."""

    issuer: str = Field(min_length=1)
    audiences: list[str] = Field(default_factory=list)
    jwks_file: str = Field(min_length=1)
    forward: bool = False  # keep the token on the request the app receives
    from_headers: list[JwtHeaderSpec] = Field(default_factory=list)
    from_params: list[str] = Field(default_factory=list)


class RequestAuthenticationSpec(SpecModel):
    jwt: list[JwtRuleSpec] = Field(min_length=1)
