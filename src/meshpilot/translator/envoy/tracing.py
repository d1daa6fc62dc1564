"""Tracing in the HTTP connection managers: which requests are sampled and, with a collector,
the tracer every sidecar reports its spans through: Zipkin (v2 JSON over HTTP) or
OpenTelemetry (OTLP over gRPC).

A sidecar and its app are one hop of a trace: the inbound listener's span is the server span of
a request (span kind from the listener's traffic direction), the outbound listener's the client
span of a call the app makes while serving it, so the router spawns no span of its own per
upstream request (`spawn_upstream_span: false`). Client and server do not share span ids (Zipkin's
`shared_span_context: false`; OpenTelemetry never does): the callee's server span is a child of
the caller's client span. The app links its calls to the request it serves by forwarding the
trace headers (B3 for Zipkin, `traceparent` for OpenTelemetry, `x-request-id`). Spans carry the
mesh service as their service name (Zipkin: the node's cluster, which the bootstrap sets to it).
"""

from __future__ import annotations

from envoy.config.core.v3 import grpc_service_pb2
from envoy.config.trace.v3 import http_tracer_pb2, opentelemetry_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import wrappers_pb2

from meshpilot.model import ir, names
from meshpilot.translator.envoy.common import typed

ZIPKIN_TRACER = "envoy.tracers.zipkin"
OPENTELEMETRY_TRACER = "envoy.tracers.opentelemetry"
ZIPKIN_SPANS_PATH = "/api/v2/spans"
# A span is named after the Host it was for, the called service (inbound and outbound alike,
# whichever the tracer: Envoy's own defaults differ between Zipkin and OpenTelemetry).
SPAN_NAME = "%REQ(:AUTHORITY)%"
_HTTP_JSON = zipkin_pb2.ZipkinConfig.CollectorEndpointVersion.Value("HTTP_JSON")


def zipkin_provider(collector_cluster: str) -> http_tracer_pb2.Tracing.Http:
    """Spans in Zipkin v2 JSON, POSTed in batches to the collector; 128-bit trace ids, as W3C
    `traceparent` and OpenTelemetry use."""
    config = zipkin_pb2.ZipkinConfig(
        collector_cluster=collector_cluster,
        collector_endpoint=ZIPKIN_SPANS_PATH,
        collector_endpoint_version=_HTTP_JSON,
        trace_id_128bit=True,
        shared_span_context=wrappers_pb2.BoolValue(value=False),
    )
    return http_tracer_pb2.Tracing.Http(name=ZIPKIN_TRACER, typed_config=typed(config))


def opentelemetry_provider(collector_cluster: str, service: str) -> http_tracer_pb2.Tracing.Http:
    """Spans exported over OTLP/gRPC (the collector's TraceService) in batches, their resource
    named after the mesh `service`."""
    config = opentelemetry_pb2.OpenTelemetryConfig(
        grpc_service=grpc_service_pb2.GrpcService(
            envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=collector_cluster)
        ),
        service_name=service,
    )
    return http_tracer_pb2.Tracing.Http(name=OPENTELEMETRY_TRACER, typed_config=typed(config))


def tracing(
    sampling_percent: float, collector: ir.Collector | None, service: str
) -> hcm.HttpConnectionManager.Tracing:
    """Envoy's random sampling decides which requests are traced (`x-request-id` carries the
    decision on); with a collector, sampled requests' spans of `service`'s sidecar go there."""
    result = hcm.HttpConnectionManager.Tracing(
        spawn_upstream_span=wrappers_pb2.BoolValue(value=False), operation=SPAN_NAME
    )
    result.random_sampling.value = sampling_percent
    if collector is not None:
        cluster = names.collector_cluster(collector.protocol)
        if collector.protocol == "opentelemetry":
            result.provider.CopyFrom(opentelemetry_provider(cluster, service))
        else:
            result.provider.CopyFrom(zipkin_provider(cluster))
    return result
