"""The caller's identity on every outbound request (see meshpilot.identity): the sidecar sets
the source header to its service, replacing whatever the app sent."""

from __future__ import annotations

from envoy.config.common.mutation_rules.v3 import mutation_rules_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2

from meshpilot import identity
from meshpilot.translator.envoy.filter_plugin import OUTBOUND, FilterContext, HttpFilter

_OVERWRITE = base_pb2.HeaderValueOption.HeaderAppendAction.Value("OVERWRITE_IF_EXISTS_OR_ADD")


def source_identity(service: str) -> header_mutation_pb2.HeaderMutation:
    stamp = mutation_rules_pb2.HeaderMutation(
        append=base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=identity.SOURCE_HEADER, value=service),
            append_action=_OVERWRITE,
        )
    )
    return header_mutation_pb2.HeaderMutation(
        mutations=header_mutation_pb2.Mutations(request_mutations=[stamp])
    )


def _config(context: FilterContext) -> header_mutation_pb2.HeaderMutation:
    return source_identity(context.proxy_service)


FILTER = HttpFilter("envoy.filters.http.header_mutation", OUTBOUND, _config)
