"""Waiting with deadlines for e2e tests and benchmarks: tests.support.wait's `wait_for`, and
HTTP probes of admin APIs and Envoy built on it."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from harness.processes import Proc
from tests.support.wait import NotYet, wait_for
from tests.support.wait import ProcessDied as ProcessDied
from tests.support.wait import WaitTimeout as WaitTimeout


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes
    elapsed: float = 0.0
    retried: bool = field(default=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> HttpReply:
    """One GET on a fresh connection (for admin APIs and probes, not for traffic)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=timeout)
    started = time.monotonic()
    try:
        path = parts.path or "/"
        conn.request("GET", f"{path}?{parts.query}" if parts.query else path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        return HttpReply(response.status, reply_headers, body, time.monotonic() - started)
    finally:
        conn.close()


def http_json(url: str, timeout: float = 2.0) -> Any:
    """GET a JSON document; a non-200 answer is an error naming the URL."""
    reply = http_get(url, timeout)
    if reply.status != 200:
        raise AssertionError(f"GET {url}: {reply.status} {reply.text[:500]}")
    return reply.json()


def wait_http_ok(
    url: str, timeout: float = 10.0, *, procs: Iterable[Proc] = (), message: str = ""
) -> HttpReply:
    """Wait until GET `url` answers 200 (connection errors mean "not yet")."""

    def ok() -> HttpReply | None:
        reply = http_get(url, timeout=1.0)
        return reply if reply.status == 200 else None

    message = message or f"200 from {url}"
    return wait_for(ok, timeout, message=message, ignore=(OSError,), procs=procs)


def envoy_state(admin_url: str) -> str:
    """Envoy's server state from `/ready`: LIVE, PRE_INITIALIZING, INITIALIZING or DRAINING."""
    return http_get(f"{admin_url}/ready", timeout=1.0).text.strip()


def envoy_ready(admin_url: str) -> bool:
    """True when Envoy says LIVE (it does so only once its initial CDS and LDS arrived)."""
    try:
        return envoy_state(admin_url) == "LIVE"
    except OSError:
        return False


def wait_envoy_live(admin_url: str, timeout: float = 15.0, *, procs: Iterable[Proc] = ()) -> None:
    """Wait for LIVE; on timeout the message shows the last state Envoy reported."""

    def live() -> bool:
        state = envoy_state(admin_url)
        if state != "LIVE":
            raise NotYet(state)
        return True

    wait_for(
        live,
        timeout,
        message=f"Envoy at {admin_url} to be LIVE",
        ignore=(OSError, NotYet),
        procs=procs,
    )
