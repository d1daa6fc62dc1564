"""Access logs streamed to the mixer over gRPC (ALS), one per listener direction."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2

from meshpilot import identity
from meshpilot.translator.envoy.common import duration, typed
from meshpilot.translator.envoy.ext_authz import mixer_grpc_service

FLUSH_INTERVAL_MS = 100  # entries reach the mixer within this much of the request's end
_V3 = config_source_pb2.ApiVersion.Value("V3")


def grpc_access_log(log_name: str, mixer_cluster: str) -> accesslog_pb2.AccessLog:
    """`log_name` tells the mixer which side logged the entry (the listener's name)."""
    config = als_pb2.HttpGrpcAccessLogConfig(
        common_config=als_pb2.CommonGrpcAccessLogConfig(
            log_name=log_name,
            grpc_service=mixer_grpc_service(mixer_cluster),
            transport_api_version=_V3,
            buffer_flush_interval=duration(FLUSH_INTERVAL_MS),
        ),
        additional_response_headers_to_log=[identity.VERSION_HEADER],
    )
    return accesslog_pb2.AccessLog(
        name="envoy.access_loggers.http_grpc", typed_config=typed(config)
    )
