"""Headless Chromium driven over the DevTools protocol (CDP), for the web console's e2e test.

Chromium runs as one of the test's processes (stopped with them, pass or fail); `Page` sends
CDP commands over its WebSocket and keeps every console error and uncaught exception the page
produced, so a test can assert there were none."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from harness.processes import Processes
from harness.wait import wait_for

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT = 15.0
REPLY_TIMEOUT = 10.0
VIEWPORT = {"width": 1400, "height": 1200, "deviceScaleFactor": 1, "mobile": False}
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class PageError(AssertionError):
    """A CDP command failed, or the page's JavaScript threw while evaluating an expression."""


class Page:
    """One tab: navigate, evaluate JavaScript, wait for DOM conditions, take screenshots."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.errors: list[str] = []  # console errors and uncaught exceptions, as text
        self._ids = itertools.count(1)
        target = self._send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self._send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.command(f"{domain}.enable")
        self.command("Emulation.setDeviceMetricsOverride", **VIEWPORT)

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        return self._send(method, params, self.session)

    def _send(self, method: str, params: dict[str, Any], session: str | None = None) -> Any:
        number = next(self._ids)
        message = {"id": number, "method": method, "params": params}
        self.socket.send(json.dumps(message | ({"sessionId": session} if session else {})))
        while True:
            reply = json.loads(self.socket.recv(timeout=REPLY_TIMEOUT))
            if reply.get("id") == number:
                if "error" in reply:
                    raise PageError(f"{method}: {reply['error']}")
                return reply["result"]
            self._note(reply)

    def _note(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['text']} ({entry.get('url', '')})")

    def open(self, url: str) -> None:
        """Load `url` (a new document: a fragment of the current one is loaded afresh) and wait
        until it has loaded."""
        self.command("Page.navigate", url="about:blank")
        self.command("Page.navigate", url=url)
        address = json.dumps(url.partition("#")[0])
        self.wait_until(
            f"document.readyState === 'complete' && location.href.startsWith({address})",
            message=f"{url} to load",
        )

    def evaluate(self, expression: str) -> Any:
        result = self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise PageError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 10.0, message: str = "") -> Any:
        """Evaluate `expression` until it is truthy (the DOM is read, nothing is slept on)."""
        return wait_for(lambda: self.evaluate(expression), timeout, 0.1, message or expression)

    def screenshot(self, *paths: Path) -> None:
        png = base64.b64decode(self.command("Page.captureScreenshot", format="png")["data"])
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)


@contextlib.contextmanager
def chromium(processes: Processes, profile: Path) -> Iterator[Page]:
    """A headless Chromium with a fresh profile, and a page in it. The browser is one of the
    test's processes, so it is stopped with them even when the test fails."""
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu"]
    argv += ["--disable-background-networking", "--no-first-run", "--disable-extensions"]
    argv += [f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"]
    browser = processes.start("chromium", argv)

    def devtools_url() -> str | None:
        found = _LISTENING.search(browser.log())
        return found.group(1) if found else None

    url = wait_for(devtools_url, START_TIMEOUT, message="Chromium's DevTools URL", procs=[browser])
    with connect(url, max_size=None, proxy=None, open_timeout=START_TIMEOUT) as socket:
        yield Page(socket)
    processes.stop(browser)
