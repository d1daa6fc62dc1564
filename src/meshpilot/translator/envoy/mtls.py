"""Mutual TLS between sidecars with workload certificates (Istio's design).

Each sidecar's certificate and the mesh trust anchor come from its agent over SDS (secrets
WORKLOAD_SECRET and ROOT_SECRET through the bootstrap's SDS_CLUSTER, `model/names.py`): the same
references for every proxy, so shared resources stay shared. A caller requires the exact SPIFFE
ID of the service it calls (secure naming: an endpoint of another service cannot answer for
it); an inbound port accepts any certificate of the mesh's trust domain, and policies decide
who may do what by the peer's principal.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from meshpilot.model import names
from meshpilot.translator.envoy.common import typed
from meshpilot.translator.envoy.tls import TLS_TRANSPORT_SOCKET

_URI_SAN = common_pb2.SubjectAltNameMatcher.SanType.Value("URI")
_V3 = config_source_pb2.ApiVersion.Value("V3")
_GRPC = config_source_pb2.ApiConfigSource.ApiType.Value("GRPC")


def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """A secret the sidecar's agent serves."""
    source = config_source_pb2.ConfigSource(
        resource_api_version=_V3,
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=_GRPC,
            transport_api_version=_V3,
            grpc_services=[
                grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                        cluster_name=names.SDS_CLUSTER
                    )
                )
            ],
        ),
    )
    return secret_pb2.SdsSecretConfig(name=name, sds_config=source)


def _common_context(san: string_pb2.StringMatcher, alpn: list[str]) -> tls_pb2.CommonTlsContext:
    """This sidecar's certificate; peers must chain to the mesh trust anchor and match `san`."""
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[sds_secret(names.WORKLOAD_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=[
                    common_pb2.SubjectAltNameMatcher(san_type=_URI_SAN, matcher=san)
                ]
            ),
            validation_context_sds_secret_config=sds_secret(names.ROOT_SECRET),
        ),
        alpn_protocols=alpn,
    )


def upstream_mtls(spiffe_id: str, http2: bool = False) -> base_pb2.TransportSocket:
    """A caller's side: present this sidecar's certificate, require exactly `spiffe_id`."""
    alpn = ["h2"] if http2 else []
    context = tls_pb2.UpstreamTlsContext(
        common_tls_context=_common_context(string_pb2.StringMatcher(exact=spiffe_id), alpn)
    )
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=typed(context))


def downstream_mtls(trust_domain: str) -> base_pb2.TransportSocket:
    """An inbound port's side: a client certificate of the mesh is required."""
    san = string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/")
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=_common_context(san, ["h2", "http/1.1"]),
    )
    context.require_client_certificate.value = True
    return base_pb2.TransportSocket(name=TLS_TRANSPORT_SOCKET, typed_config=typed(context))
