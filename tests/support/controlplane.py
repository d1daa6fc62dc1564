"""An in-process control plane on free loopback ports, for tests that save mesh files."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from meshpilot.controlplane import ControlPlane
from meshpilot.runner.addresses import free_port

LOCALHOST = "127.0.0.1"


@contextlib.asynccontextmanager
async def running_control_plane(
    directory: Path, mesh_text: str, **options: Any
) -> AsyncIterator[ControlPlane]:
    """A started ControlPlane (xDS and admin on free ports) serving `directory/mesh.yaml`,
    which holds `mesh_text` at first; stopped on exit. `options`: ControlPlane's (state_dir,
    tls)."""
    path = directory / "mesh.yaml"
    path.write_text(mesh_text)
    control = ControlPlane(
        path,
        f"{LOCALHOST}:{free_port(LOCALHOST)}",
        f"{LOCALHOST}:{free_port(LOCALHOST)}",
        **options,
    )
    await control.start()
    try:
        yield control
    finally:
        await control.stop()
