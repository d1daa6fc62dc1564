"""Fault injection: every outbound chain carries the fault filter, doing nothing by itself; a
route with a `fault:` gives it a per-route config (a fixed delay and/or an abort, each for a
share of requests)."""

from __future__ import annotations

from envoy.extensions.filters.http.fault.v3 import fault_pb2

from meshpilot.model import ir
from meshpilot.translator.envoy.common import duration
from meshpilot.translator.envoy.filter_plugin import OUTBOUND, FilterContext, HttpFilter
from meshpilot.translator.envoy.route import fractional_percent

_IDLE = fault_pb2.HTTPFault()


def http_fault(fault: ir.Fault) -> fault_pb2.HTTPFault:
    """The fault filter's per-route config: a fixed delay and/or an abort, each for a share."""
    result = fault_pb2.HTTPFault()
    if fault.delay_ms is not None:
        result.delay.fixed_delay.CopyFrom(duration(fault.delay_ms))
        result.delay.percentage.CopyFrom(fractional_percent(fault.delay_percent))
    if fault.abort_status is not None:
        result.abort.http_status = fault.abort_status
    elif fault.abort_grpc_status is not None:
        result.abort.grpc_status = fault.abort_grpc_status
    if result.HasField("abort"):
        result.abort.percentage.CopyFrom(fractional_percent(fault.abort_percent))
    return result


def _config(context: FilterContext) -> fault_pb2.HTTPFault:
    return _IDLE


def _per_route(service: ir.Service, route: ir.Route) -> fault_pb2.HTTPFault | None:
    return http_fault(route.fault) if route.fault is not None else None


FILTER = HttpFilter("envoy.filters.http.fault", OUTBOUND, _config, per_route=_per_route)
