"""Tracing in the HTTP connection managers: which requests are sampled and, with a collector,
the Zipkin tracer every sidecar reports its spans through.

A sidecar and its app are one hop of a trace: the inbound listener's span is the server span of
a request (span kind from the listener's traffic direction), the outbound listener's the client
span of a call the app makes while serving it, so the router spawns no span of its own per
upstream request (`spawn_upstream_span: false`). Client and server do not share span ids (Zipkin's
`shared_span_context: false`): the callee's server span is a child of the caller's client span.
The app links its calls to the request it serves by forwarding the trace headers (B3,
`traceparent`, `x-request-id`). Zipkin names each span's service after the node's cluster, which
the bootstrap sets to the mesh service.
"""

from __future__ import annotations

from envoy.config.trace.v3 import http_tracer_pb2, zipkin_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import wrappers_pb2

from meshpilot.translator.envoy.common import typed

ZIPKIN_TRACER = "envoy.tracers.zipkin"
ZIPKIN_SPANS_PATH = "/api/v2/spans"
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


def tracing(
    sampling_percent: float, collector_cluster: str | None = None
) -> hcm.HttpConnectionManager.Tracing:
    """Envoy's random sampling decides which requests are traced (`x-request-id` carries the
    decision on); with a collector cluster, sampled requests' spans are reported there."""
    result = hcm.HttpConnectionManager.Tracing(
        spawn_upstream_span=wrappers_pb2.BoolValue(value=False)
    )
    result.random_sampling.value = sampling_percent
    if collector_cluster is not None:
        result.provider.CopyFrom(zipkin_provider(collector_cluster))
    return result
