"""The router: the last filter of every HTTP chain, sending the request where its route says."""

from __future__ import annotations

from envoy.extensions.filters.http.router.v3 import router_pb2

from meshpilot.translator.envoy.filter_plugin import BOTH, FilterContext, HttpFilter

_ROUTER = router_pb2.Router()


def _config(context: FilterContext) -> router_pb2.Router:
    return _ROUTER


FILTER = HttpFilter("envoy.filters.http.router", BOTH, _config)
