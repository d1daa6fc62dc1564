"""Pausing the cyclic garbage collector around allocation-heavy steps.

Parsing a big mesh file or translating a big mesh builds a million short-lived objects; the
collections they trigger walk every live object, the translator's caches included, and cost
more than the work itself. These steps create no reference cycles worth collecting early, so
the collector waits until they are done.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
