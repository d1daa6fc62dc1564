"""The control plane's state directory: where the CA and the token key live between restarts.

Default: `$XDG_STATE_HOME/meshpilot`, else `~/.local/state/meshpilot` (the XDG base-directory
spec's place for state that should survive restarts but is not configuration). `serve
--state-dir` and `token --state-dir` override it. Directories are created 0700 and secrets
written 0600, atomically (a crash never leaves half a key; two control planes starting at once
agree on one key), and a secret readable by group or others is refused, as ssh refuses such a
key.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable
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
    """Write `data` to `path` atomically (replacing it): 0600 when `secret`, else 0644."""
    tmp = _write_temporary(path, data, secret=secret)
    try:
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise IdentityError(f"cannot write '{path}': {err.strerror}") from None


def create_file(path: Path, data: bytes, *, secret: bool) -> bool:
    """Write `path` whole unless it exists; False when another process created it first."""
    tmp = _write_temporary(path, data, secret=secret)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    except OSError as err:
        raise IdentityError(f"cannot write '{path}': {err.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return True


def create_dir(path: Path, fill: Callable[[Path], None]) -> bool:
    """Make directory `path` (0700) with what `fill` writes into it, all at once: it is filled
    under a temporary name, then renamed. False when another process created it first."""
    private_dir(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        fill(tmp)
        os.rename(tmp, path)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise IdentityError(f"cannot create '{path}': {err.strerror}") from None
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
    return True


def _write_temporary(path: Path, data: bytes, *, secret: bool) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise IdentityError(f"cannot write '{path}': {err.strerror}") from None
    return tmp


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
