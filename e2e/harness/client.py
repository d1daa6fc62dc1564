"""Traffic through a sidecar: a keep-alive HTTP client for `IP:15001` and a load generator that
records every result, so a test can prove "no failures during the change" and measure when new
behaviour took effect."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.wait import HttpReply, wait_for

OUTBOUND_PORT = 15001
IDEMPOTENT = {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}
# What a server closing an idle keep-alive connection looks like to the next request on it.
STALE_CONNECTION_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class MeshClient:
    """Plain HTTP/1.1 to one address over one keep-alive connection (like an app would).

    An idempotent request that fails on a *reused* connection before any answer is retried
    once on a new connection, as RFC 9112 9.3.1 allows and every real HTTP client does (the
    server may close an idle connection just as a request goes out); such replies carry
    `retried=True` so a test can still see them. `source_ip`: the address its connections
    come from (default: the kernel's choice, 127.0.0.1 for a loopback address)."""

    def __init__(
        self,
        ip: str,
        port: int = OUTBOUND_PORT,
        timeout: float = 5.0,
        source_ip: str | None = None,
    ) -> None:
        self.ip, self.port, self.timeout = ip, port, timeout
        self.source = (source_ip, 0) if source_ip is not None else None
        self._conn: http.client.HTTPConnection | None = None
        self._used = False

    def request(
        self,
        host: str,
        path: str = "/",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> HttpReply:
        """Send one request with `Host: host`; returns status, lower-case headers, body."""
        all_headers = {"host": host, **(headers or {})}
        reused = self._used
        try:
            return self._exchange(method, path, all_headers, body)
        except STALE_CONNECTION_ERRORS:
            self.close()
            if not reused or method not in IDEMPOTENT:
                raise
        reply = self._exchange(method, path, all_headers, body)
        reply.retried = True
        return reply

    def get(self, host: str, path: str = "/", **headers: str) -> HttpReply:
        return self.request(host, path, headers=headers)

    def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: bytes | str | None
    ) -> HttpReply:
        conn = self._connection()
        started = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=headers)
            self._used = True
            response = conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        reply_headers = {k.lower(): v for k, v in response.getheaders()}
        return HttpReply(response.status, reply_headers, data, time.monotonic() - started)

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                self.ip, self.port, timeout=self.timeout, source_address=self.source
            )
            self._used = False
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._used = False

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Result:
    """One request of a load run: when it was sent and what came back (status or error)."""

    sent_at: float  # time.monotonic()
    elapsed: float
    status: int | None
    error: str | None = None
    headers: Mapping[str, str] | None = None
    body: Any = None  # parsed JSON when the answer was JSON, else the text
    retried: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and self.status < 500


class LoadGenerator:
    """Steady requests from background threads until `stop()`; every result is recorded.

    with LoadGenerator(MeshClient(ip), "reviews") as load:
        load.wait_for_results(20)
        ...change something...
        t = load.effective_at(lambda r: r.body["version"] == "v2")
    assert load.failures() == []
    """

    def __init__(
        self,
        client: MeshClient | Callable[[], MeshClient],
        host: str,
        path: str = "/",
        *,
        headers: Mapping[str, str] | None = None,
        interval: float = 0.01,
        concurrency: int = 1,
        is_failure: Callable[[Result], bool] | None = None,
    ) -> None:
        factory = client if callable(client) else _reconnecting(client)
        self._clients = [factory() for _ in range(concurrency)]
        self.host, self.path, self.headers = host, path, dict(headers or {})
        self.interval = interval
        self.is_failure = is_failure or (lambda r: not r.ok)
        self._results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadGenerator:
        for n, client in enumerate(self._clients):
            thread = threading.Thread(target=self._run, args=(client,), name=f"load-{n}")
            thread.daemon = True
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        for client in self._clients:
            client.close()
        return self.results

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self, client: MeshClient) -> None:
        while not self._stop.is_set():
            result = self._one(client)
            with self._lock:
                self._results.append(result)
            self._stop.wait(self.interval)

    def _one(self, client: MeshClient) -> Result:
        sent = time.monotonic()
        try:
            reply = client.request(self.host, self.path, headers=self.headers)
        except Exception as err:  # every failure is data for the test
            return Result(sent, time.monotonic() - sent, None, f"{type(err).__name__}: {err}")
        body: Any = reply.text
        if reply.headers.get("content-type", "").startswith("application/json"):
            with contextlib.suppress(ValueError):
                body = reply.json()
        return Result(sent, reply.elapsed, reply.status, None, reply.headers, body, reply.retried)

    @property
    def results(self) -> list[Result]:
        """A snapshot, in the order the results came in."""
        with self._lock:
            return sorted(self._results, key=lambda r: r.sent_at)

    def failures(self, since: float | None = None) -> list[Result]:
        return [r for r in self.since(since) if self.is_failure(r)]

    def since(self, moment: float | None) -> list[Result]:
        return [r for r in self.results if moment is None or r.sent_at >= moment]

    def wait_for_results(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` more results than now have come in (traffic is flowing)."""
        target = len(self.results) + count
        wait_for(lambda: len(self.results) >= target, timeout, message=f"{count} results")

    def effective_at(self, predicate: Callable[[Result], bool]) -> float | None:
        """Send time of the first result from which on every result satisfies `predicate`,
        i.e. when new behaviour took effect for good; None if the last one does not."""
        moment = None
        for result in self.results:
            if not predicate(result):
                moment = None
            elif moment is None:
                moment = result.sent_at
        return moment

    def wait_effective(
        self, predicate: Callable[[Result], bool], *, settle: int = 10, timeout: float = 10.0
    ) -> float:
        """Wait until the last `settle` results all satisfy `predicate`; return `effective_at`."""

        def settled() -> float | None:
            tail = self.results[-settle:]
            if len(tail) < settle or not all(predicate(r) for r in tail):
                return None
            return self.effective_at(predicate)

        return wait_for(settled, timeout, message="new behaviour to take effect")

    def summary(self) -> str:
        """Counts per status/error, for assertion messages."""
        counts: dict[str, int] = {}
        for r in self.results:
            key = r.error or str(r.status)
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def _reconnecting(client: MeshClient) -> Callable[[], MeshClient]:
    """Each load thread gets its own connection to the same address as `client`."""
    return lambda: MeshClient(client.ip, client.port, client.timeout)
