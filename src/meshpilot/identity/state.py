"""The control plane's state directory: where the CA and the token key live between restarts.

Default: `$XDG_STATE_HOME/meshpilot`, else `~/.local/state/meshpilot` (the XDG base-directory
spec's place for state that should survive restarts but is not configuration). `serve
--state-dir` and `token --state-dir` override it. Directories are created 0700 and secrets
written 0600, atomically (a crash never leaves half a key), and a secret readable by group or
others is refused, as ssh refuses such a key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from meshpilot.identity.errors import IdentityError


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "meshpilot"


def private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the owner only; return it."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise IdentityError(f"cannot create state directory '{path}': {err.strerror}") from None
    return path


def write_file(path: Path, data: bytes, *, secret: bool) -> None:
    """Write `data` to `path` atomically: 0600 when `secret`, else 0644."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(tmp, flags, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise IdentityError(f"cannot write '{path}': {err.strerror}") from None


def read_file(path: Path, *, secret: bool) -> bytes:
    """Read `path`; a secret must not be readable by group or others."""
    try:
        if secret and os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"'{path}' is readable by other users; a private key must be mode 0600 "
                f"(chmod 600 '{path}')"
            )
        return path.read_bytes()
    except OSError as err:
        raise IdentityError(f"cannot read '{path}': {err.strerror}") from None
