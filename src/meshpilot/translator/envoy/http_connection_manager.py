"""The HTTP connection manager, the one builder with options enough to deserve an object."""

from __future__ import annotations

from dataclasses import dataclass, field

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from google.protobuf import wrappers_pb2

from meshpilot.translator.envoy.common import ads_config_source


@dataclass
class HttpConnectionManagerBuilder:
    """Collects a listener's routing source and filters, then builds the HCM config."""

    stat_prefix: str
    rds_name: str | None = None
    scopes_name: str | None = None
    route_config: route_pb2.RouteConfiguration | None = None
    filters: list[hcm.HttpFilter] = field(default_factory=list)
    access_logs: list[accesslog_pb2.AccessLog] = field(default_factory=list)
    tracing: hcm.HttpConnectionManager.Tracing | None = None
    trusted: tuple[str, ...] | None = None

    def with_rds(self, name: str) -> HttpConnectionManagerBuilder:
        self.rds_name = name
        return self

    def with_scoped_routes(self, name: str) -> HttpConnectionManagerBuilder:
        """A route table per request, chosen by its Host without the port among the scopes
        of SRDS config `name`; each scope's table comes over RDS."""
        self.scopes_name = name
        return self

    def with_route_config(
        self, config: route_pb2.RouteConfiguration
    ) -> HttpConnectionManagerBuilder:
        self.route_config = config
        return self

    def with_filters(self, filters: list[hcm.HttpFilter]) -> HttpConnectionManagerBuilder:
        """The chain in its order, as `http_filters.http_filters` gives it (router last)."""
        self.filters = filters
        return self

    def with_access_log(self, log: accesslog_pb2.AccessLog) -> HttpConnectionManagerBuilder:
        self.access_logs.append(log)
        return self

    def with_tracing(
        self, tracing: hcm.HttpConnectionManager.Tracing
    ) -> HttpConnectionManagerBuilder:
        """Sampling and where spans go, as `tracing.tracing` builds them."""
        self.tracing = tracing
        return self

    def trusting(self, addresses: tuple[str, ...]) -> HttpConnectionManagerBuilder:
        """Obey the `x-envoy-*` request headers (`x-envoy-max-retries`,
        `x-envoy-upstream-rq-timeout-ms`...) only of callers connecting from `addresses`: Envoy
        strips them from every other request (none, when `addresses` is empty). A caller is
        judged by its connection's address, never by an `x-forwarded-for` it sends."""
        self.trusted = addresses
        return self

    def build(self) -> hcm.HttpConnectionManager:
        manager = hcm.HttpConnectionManager(
            stat_prefix=self.stat_prefix,
            codec_type=hcm.HttpConnectionManager.AUTO,
            http_filters=self.filters,
        )
        if self.rds_name is not None:
            manager.rds.CopyFrom(
                hcm.Rds(config_source=ads_config_source(), route_config_name=self.rds_name)
            )
        elif self.scopes_name is not None:
            manager.scoped_routes.CopyFrom(_scoped_routes(self.scopes_name))
        elif self.route_config is not None:
            manager.route_config.CopyFrom(self.route_config)
        if self.trusted is not None:
            manager.internal_address_config.CopyFrom(_internal_addresses(self.trusted))
        if self.trusted:  # the caller is its connection's address; what it sent is kept as is
            manager.use_remote_address.value = True
            manager.skip_xff_append = True
        manager.access_log.extend(self.access_logs)
        if self.tracing is not None:
            manager.tracing.CopyFrom(self.tracing)
        return manager


def _internal_addresses(
    addresses: tuple[str, ...],
) -> hcm.HttpConnectionManager.InternalAddressConfig:
    """Each address alone (a /32 or /128), so that no neighbour on its network is trusted."""
    return hcm.HttpConnectionManager.InternalAddressConfig(
        cidr_ranges=[
            address_pb2.CidrRange(
                address_prefix=a, prefix_len=wrappers_pb2.UInt32Value(value=128 if ":" in a else 32)
            )
            for a in addresses
        ]
    )


def _scoped_routes(name: str) -> hcm.ScopedRoutes:
    host = hcm.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder.HeaderValueExtractor(
        name=":authority", element_separator=":", index=0
    )
    fragment = hcm.ScopedRoutes.ScopeKeyBuilder.FragmentBuilder(header_value_extractor=host)
    return hcm.ScopedRoutes(
        name=name,
        scope_key_builder=hcm.ScopedRoutes.ScopeKeyBuilder(fragments=[fragment]),
        rds_config_source=ads_config_source(),
        scoped_rds=hcm.ScopedRds(scoped_rds_config_source=ads_config_source()),
    )
