"""Fixed-window request counters in Redis, shared by every mixer that uses the same Redis.

A window is `window_ms` long and starts at a multiple of it on Redis's own clock (`TIME`), so
mixers whose clocks disagree still count into the same window. One Lua script takes the time,
adds the hits to the window's key and sets the key to expire after the window: atomic, and one
round trip. A key is `meshpilot:ratelimit:<JSON of the limit's names>:<window start ms>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from meshpilot.identity.tls import split_address

KEY_PREFIX = "meshpilot:ratelimit:"
CONNECT_TIMEOUT_S = 0.25
KEEP_AFTER_WINDOW_MS = 1000  # a key outlives its window a little, for late readers
# KEYS[1]: the counter's name; ARGV: window (ms), hits. Returns {count, ms until the window ends}.
_COUNT_IN_WINDOW = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
local start = now_ms - (now_ms % window)
local key = KEYS[1] .. ':' .. start
local count = redis.call('INCRBY', key, tonumber(ARGV[2]))
redis.call('PEXPIRE', key, window + tonumber(ARGV[3]))
return {count, start + window - now_ms}
"""


@dataclass(frozen=True)
class WindowCount:
    """Hits counted in the current window so far (this call's included), and its time left."""

    count: int
    ms_left: int


def counter_name(*parts: str | None) -> str:
    """A Redis key prefix that no other limit's parts can produce (JSON quotes each part)."""
    return KEY_PREFIX + json.dumps(parts, separators=(",", ":"))


class WindowCounters:
    """The counters of one Redis (`HOST:PORT`); calls raise `redis.RedisError` or `OSError`
    when it cannot be reached."""

    def __init__(self, address: str, timeout_s: float) -> None:
        self.address = address
        host, port = split_address(address)
        self._redis = aioredis.Redis(
            host=host,
            port=port,
            socket_connect_timeout=min(CONNECT_TIMEOUT_S, timeout_s),
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),  # the sidecar waits `timeout_s` at most: fail at once
        )
        self._script = self._redis.register_script(_COUNT_IN_WINDOW)

    async def hit(self, name: str, window_ms: int, hits: int = 1) -> WindowCount:
        count, ms_left = await self._script(
            keys=[name], args=[window_ms, hits, KEEP_AFTER_WINDOW_MS]
        )
        return WindowCount(int(count), int(ms_left))

    async def close(self) -> None:
        await self._redis.aclose()
