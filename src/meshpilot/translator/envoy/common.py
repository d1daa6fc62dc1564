"""Small proto values that every builder needs."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, config_source_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message


def duration(ms: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def socket_address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


_ADS = config_source_pb2.ConfigSource(
    ads=config_source_pb2.AggregatedConfigSource(),
    resource_api_version=config_source_pb2.ApiVersion.Value("V3"),
)


def ads_config_source() -> config_source_pb2.ConfigSource:
    """Fetch the resource over the proxy's one aggregated (ADS) stream."""
    return _ADS


def typed(message: Message) -> any_pb2.Any:
    """Pack an extension's config into the `typed_config` Any that Envoy expects."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
