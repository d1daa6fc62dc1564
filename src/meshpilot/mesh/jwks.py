"""JWKS files (RFC 7517) named by `request_authentication`: checked when the mesh is validated,
so that a sidecar never receives keys it cannot use (Envoy would reject every token)."""

from __future__ import annotations

import json
from pathlib import Path

KEY_TYPES = ("RSA", "EC", "oct", "OKP")


def jwks_problem(path: Path) -> str | None:
    """Why the file is not a usable JWKS (None: it is): missing, not JSON, or no keys with a
    known `kty`."""
    if not path.is_file():
        return f"'{path}' does not exist"
    try:
        document = json.loads(path.read_bytes())
    except OSError as err:
        return f"cannot read '{path}': {err.strerror or err}"
    except ValueError as err:
        return f"'{path}' is not JSON: {err}"
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        return f"'{path}' is not a JWKS: it needs a non-empty list 'keys'"
    for i, key in enumerate(keys):
        kty = key.get("kty") if isinstance(key, dict) else None
        if kty not in KEY_TYPES:
            return f"'{path}': keys[{i}] has no 'kty' of {', '.join(KEY_TYPES)}"
    return None
