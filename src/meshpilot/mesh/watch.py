"""Watch the mesh file and call back after a burst of saves has settled (debounce).

The parent directory is watched, not the file, so editors that save by writing a new file and
renaming it over the old one are seen too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import Change, awatch

from meshpilot.background import background

log = logging.getLogger(__name__)

QUIET_MS = 50  # a save is applied once no further change came for this long
MAX_WAIT_MS = 500  # ...but a constant stream of saves is still applied this often


class MeshWatcher:
    """Component: calls `on_change()` (awaited if a coroutine function) after the file changed;
    failures are logged, never fatal."""

    def __init__(self, path: Path, on_change: Callable[[], Awaitable[None] | None]) -> None:
        self.path = path.resolve()
        self.on_change = on_change
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = background(self._run(), f"watch {self.path}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def _is_mesh_file(self, _change: Change, path: str) -> bool:
        return Path(path) == self.path

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                async for _ in awatch(
                    self.path.parent,
                    watch_filter=self._is_mesh_file,
                    step=QUIET_MS,
                    debounce=MAX_WAIT_MS,
                    stop_event=self._stop,
                    recursive=False,
                ):
                    await self._notify()
            except Exception:
                log.exception("watching %s failed; watching again", self.path)
                await asyncio.sleep(1)

    async def _notify(self) -> None:
        try:
            result = self.on_change()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("applying %s failed", self.path)
