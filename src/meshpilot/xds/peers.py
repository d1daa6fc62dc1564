"""Per-peer bounds on ADS streams: how many one peer address holds at once, and how fast it
opens new ones. Checked before the first request is even read, so a flood of streams from one
address costs neither a token verification nor a translation.

A real sidecar opens one stream and keeps it; after a control-plane restart it opens one more.
The defaults leave room for many sidecars behind one address (`--any-address` tokens, NAT);
simulated fleets on one address (bench/) turn them off with 0.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from meshpilot.identity.admission import Refused, peer_ip

MAX_STREAMS_PER_PEER = 128
NEW_STREAMS_PER_PEER_PER_S = 20.0
# Peers whose buckets are full again are forgotten past this many, so addresses seen once do
# not accumulate.
MAX_PEERS_TRACKED = 10_000


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class PeerLimits:
    """`max_streams` open streams per peer IP and `rate` new ones per second (burst: as many as
    `max_streams`); 0 turns a limit off."""

    max_streams: int = MAX_STREAMS_PER_PEER
    rate: float = NEW_STREAMS_PER_PEER_PER_S
    clock: Callable[[], float] = time.monotonic
    _open: Counter[str] = field(default_factory=Counter)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def open(self, peer: str) -> Callable[[], None]:
        """Count a new stream of `peer` (a gRPC peer string); Refused if over a limit. Returns
        what to call when the stream ends."""
        ip = peer_ip(peer)
        key = str(ip) if ip is not None else peer
        if self.max_streams and self._open[key] >= self.max_streams:
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "peer_streams",
                f"{key} already has {self.max_streams} ADS streams open",
            )
        if self.rate and not self._take(key):
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "peer_rate",
                f"{key} opens ADS streams faster than {self.rate:g} per second",
            )
        self._open[key] += 1
        return lambda: self._close(key)

    def _take(self, key: str) -> bool:
        now, burst = self.clock(), float(self.max_streams or self.rate)
        bucket = self._buckets.get(key) or _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            self._buckets[key] = bucket
            return False
        bucket.tokens -= 1
        self._buckets[key] = bucket
        if len(self._buckets) > MAX_PEERS_TRACKED:
            self._forget_full(now, burst)
        return True

    def _forget_full(self, now: float, burst: float) -> None:
        for key, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.at) * self.rate >= burst:
                del self._buckets[key]

    def _close(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
