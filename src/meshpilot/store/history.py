"""`meshpilot apply`, `history` and `rollback`: the mesh history in a store, from the command
line. Each opens the store, does one thing and closes it; an etcd that does not answer is one
line (StoreUnavailable)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from meshpilot.admin.api import utc_timestamp
from meshpilot.admin.status import format_table
from meshpilot.mesh.load import load_mesh, read_mesh_file
from meshpilot.store import History, MeshVersion, open_store, who

T = TypeVar("T")
APPLY_NOTE = "apply"


def _with_history(url: str, use: Callable[[History], Awaitable[T]]) -> T:
    async def run() -> T:
        store = open_store(url)
        try:
            return await use(store.history)
        finally:
            await store.close()

    return asyncio.run(run())


def apply_mesh(path: Path, url: str, author: str | None) -> tuple[MeshVersion, bool]:
    """Validate the file (MeshInvalid with every problem) and store it as the next version:
    (the current version, whether it is new: not when its content is the current one's)."""
    load_mesh(path)
    content = read_mesh_file(path)
    source = str(path.resolve())
    return _with_history(url, lambda h: h.append(content, source, author or who(), APPLY_NOTE))


def rollback_mesh(number: int, url: str, author: str | None) -> tuple[MeshVersion, bool]:
    """Make version `number` current again (UnknownVersion when there is none)."""
    return _with_history(url, lambda h: h.rollback(number, author or who()))


def version_line(version: MeshVersion, new: bool) -> str:
    if new:
        return f"stored version {version.number} ({version.digest}); replicas serve it now"
    return (
        f"unchanged: the current version {version.number} ({version.digest}) has this "
        "content; nothing stored"
    )


def history_table(versions: list[MeshVersion]) -> str:
    """One row per version, oldest first; the last one is current, the others superseded."""
    rows = [["VERSION", "WHEN", "WHO", "HASH", "STATUS", "DESCRIPTION"]]
    for version in versions:
        status = "current" if version is versions[-1] else "superseded"
        when = utc_timestamp(version.created_at) or ""
        row = [str(version.number), when, version.author, version.digest, status, version.note]
        rows.append(row)
    return format_table(rows)


def print_history(url: str) -> None:
    versions = _with_history(url, lambda h: h.versions())
    print(history_table(versions) if versions else f"no mesh version stored in {url} yet")
