"""Transport socket builders: TLS origination from a sidecar to a service's endpoints."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from meshpilot.model import ir
from meshpilot.translator.envoy.common import typed

TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
# Debian/Ubuntu's bundle of the system's trusted CAs (the `ca-certificates` package).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_DNS_SAN = common_pb2.SubjectAltNameMatcher.SanType.Value("DNS")


def validation_context(tls: ir.UpstreamTls) -> common_pb2.CertificateValidationContext:
    """Trust `ca_file` (else the system's CAs); with an SNI, the certificate must also name it."""
    context = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(filename=tls.ca_file or SYSTEM_CA_BUNDLE)
    )
    if tls.sni:
        context.match_typed_subject_alt_names.add(
            san_type=_DNS_SAN, matcher=string_pb2.StringMatcher(exact=tls.sni)
        )
    return context


def upstream_tls_context(tls: ir.UpstreamTls, http2: bool = False) -> tls_pb2.UpstreamTlsContext:
    """`verify: false` leaves out the validation context: any certificate is accepted."""
    context = tls_pb2.UpstreamTlsContext(sni=tls.sni or "")
    if tls.verify:
        context.common_tls_context.validation_context.CopyFrom(validation_context(tls))
    if http2:
        context.common_tls_context.alpn_protocols.append("h2")
    return context


def upstream_tls_transport_socket(
    tls: ir.UpstreamTls, http2: bool = False
) -> base_pb2.TransportSocket:
    """The cluster's connections to its members speak TLS (`h2` offered by ALPN for HTTP/2)."""
    return base_pb2.TransportSocket(
        name=TLS_TRANSPORT_SOCKET, typed_config=typed(upstream_tls_context(tls, http2))
    )
