"""What an HTTP filter plug-in is: its name, the chains it may sit in, and what it contributes.

A plug-in module defines one `HttpFilter` (or a few) and `http_filters.ORDER` lists them: that
table is the only place that says which filters exist and in which order they run. Given a
listener's `FilterContext`, a plug-in returns its filter config (or None: not in this chain),
the clusters that config refers to, and, per route, a config that overrides it for that route.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from google.protobuf.message import Message

from meshpilot.model import ir

Chain = Literal["inbound", "outbound"]
INBOUND: frozenset[Chain] = frozenset({"inbound"})
OUTBOUND: frozenset[Chain] = frozenset({"outbound"})
BOTH: frozenset[Chain] = INBOUND | OUTBOUND


@dataclass(frozen=True)
class FilterContext:
    """What a sidecar's filters are chosen from: its service by name and as the mesh defines it
    (None: not in the mesh), the policies it enforces, where the mixer is, and the trust domain
    of callers' identities (None: no caller is identified)."""

    proxy_service: str
    service: ir.Service | None = None
    policies: tuple[ir.Policy, ...] = ()
    mixer: ir.Mixer | None = None
    trust_domain: str | None = None

    def of_action(self, action: str) -> list[ir.Policy]:
        return [p for p in self.policies if p.action == action]


def no_clusters(context: FilterContext) -> Sequence[str]:
    return ()


@dataclass(frozen=True)
class HttpFilter:
    """One HTTP filter: `config` gives the filter's config for a listener (None: left out),
    `clusters` the clusters that config calls, `per_route` a route's own config (None: none).
    `optional`: a client that does not know the filter (a proxyless gRPC one) may skip it."""

    name: str
    chains: frozenset[Chain]
    config: Callable[[FilterContext], Message | None]
    clusters: Callable[[FilterContext], Sequence[str]] = no_clusters
    per_route: Callable[[ir.Service, ir.Route], Message | None] | None = None
    optional: bool = False
