"""Watch the mesh file (and files it names, such as JWKS files) and call back after a burst of
saves has settled (debounce).

The parent directories are watched, not the files, so editors that save by writing a new file
and renaming it over the old one are seen too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from watchfiles import Change, awatch

from meshpilot.background import background

log = logging.getLogger(__name__)

QUIET_MS = 50  # a save is applied once no further change came for this long
MAX_WAIT_MS = 500  # ...but a constant stream of saves is still applied this often


class MeshWatcher:
    """Component: calls `on_change()` (awaited if a coroutine function) after the file, or one of
    `also()` (asked again after each change: the files the applied mesh reads), changed;
    failures are logged, never fatal."""

    def __init__(
        self,
        path: Path,
        on_change: Callable[[], Awaitable[None] | None],
        also: Callable[[], Iterable[Path]] = tuple,
    ) -> None:
        self.path = path.resolve()
        self.on_change = on_change
        self.also = also
        self._files = frozenset({self.path})
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = background(self._run(), f"watch {self.path}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def _watched(self) -> frozenset[Path]:
        return frozenset({self.path, *(Path(p).resolve() for p in self.also())})

    def _is_watched(self, _change: Change, path: str) -> bool:
        return Path(path) in self._files

    async def _run(self) -> None:
        """Watch the folders of the watched files; when those change, watch again."""
        while not self._stop.is_set():
            self._files = self._watched()
            folders = sorted({f.parent for f in self._files if f.parent.is_dir()})
            try:
                async for _ in awatch(
                    *folders,
                    watch_filter=self._is_watched,
                    step=QUIET_MS,
                    debounce=MAX_WAIT_MS,
                    stop_event=self._stop,
                    recursive=False,
                ):
                    await self._notify()
                    if self._watched() != self._files:
                        break
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
