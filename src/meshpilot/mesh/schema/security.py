"""Workload identity and mTLS: the mesh-wide `security:` section and its per-service override.

The CA and tokens live in `meshpilot.identity`: the control plane's certificate service uses
`ca`, `trust_domain` and `certificate_ttl`; the translator `trust_domain` and `mtls` (Istio's
PeerAuthentication modes: permissive lets a service migrate into the mesh).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from meshpilot.identity.errors import InvalidSpiffeId
from meshpilot.identity.lifetimes import MAX_TTL, MIN_TTL
from meshpilot.identity.spiffe import check_trust_domain
from meshpilot.mesh.durations import parse_duration
from meshpilot.mesh.fields import Duration, SpecModel
from meshpilot.model.ir import MtlsMode

MIN_CERTIFICATE_TTL_MS = MIN_TTL // dt.timedelta(milliseconds=1)
MAX_CERTIFICATE_TTL_MS = MAX_TTL // dt.timedelta(milliseconds=1)


def _trust_domain(name: str) -> str:
    try:
        return check_trust_domain(name)
    except InvalidSpiffeId as err:
        raise PydanticCustomError("trust_domain", str(err)) from None


def _certificate_ttl(duration: str) -> str:
    if not MIN_CERTIFICATE_TTL_MS <= parse_duration(duration) <= MAX_CERTIFICATE_TTL_MS:
        raise PydanticCustomError(
            "certificate_ttl", "a certificate lifetime must be from 60s to 2160h (90 days)"
        )
    return duration


TrustDomain = Annotated[str, AfterValidator(_trust_domain)]
CertificateTtl = Annotated[Duration, AfterValidator(_certificate_ttl)]


class CaFilesSpec(SpecModel):
    """A plugged-in CA: PEM files, relative to the mesh file or absolute."""

    cert: str = Field(min_length=1)  # the CA certificate, then its chain up to the root
    key: str = Field(min_length=1)  # its private key, unencrypted, mode 0600


class SecuritySpec(SpecModel):
    mtls: MtlsMode = "strict"
    ca: CaFilesSpec | None = None  # None: a root generated in the control plane's state dir
    trust_domain: TrustDomain | None = None  # None: the mesh name, normalised
    certificate_ttl: CertificateTtl = "24h"


class ServiceSecuritySpec(SpecModel):
    mtls: MtlsMode | None = None  # None: the mesh-wide mode
