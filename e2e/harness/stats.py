"""Tolerances for statistical assertions, derived from the sample size instead of hand-tuned."""

from __future__ import annotations

import math

# Four and a half standard deviations: a correct implementation fails about once in 150,000 runs.
Z = 4.5


def binomial_bounds(samples: int, share: float, z: float = Z) -> tuple[float, float]:
    """Where the number of hits in `samples` Bernoulli(share) trials falls, barring bad luck."""
    mean = samples * share
    spread = z * math.sqrt(samples * share * (1 - share))
    return mean - spread, mean + spread
