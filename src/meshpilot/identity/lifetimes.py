"""How long workload certificates may live: the bounds the mesh file and the CA both enforce."""

from __future__ import annotations

import datetime as dt

DEFAULT_TTL = dt.timedelta(hours=24)
MIN_TTL = dt.timedelta(seconds=60)
MAX_TTL = dt.timedelta(days=90)
