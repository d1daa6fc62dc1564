"""Tolerances for statistical assertions, derived from the sample size and the process that
makes the samples instead of hand-tuned."""

from __future__ import annotations

import math

# Four and a half standard deviations: a correct implementation fails about once in 150,000 runs.
Z = 4.5


def binomial_bounds(samples: int, share: float, z: float = Z) -> tuple[float, float]:
    """Where the number of hits in `samples` Bernoulli(share) trials falls, barring bad luck."""
    mean = samples * share
    spread = z * math.sqrt(samples * share * (1 - share))
    return mean - spread, mean + spread


def round_robin_bounds(samples: int, hosts: int, balancers: int = 1) -> tuple[float, float]:
    """Where one host's count falls when `samples` requests are spread over `hosts` by
    `balancers` independent round-robin pickers (Envoy: one per worker thread a request goes
    through). No luck involved: each picker gives every host its share rounded up or down,
    which is off by at most (hosts - 1) / hosts."""
    share, slack = samples / hosts, balancers * (hosts - 1) / hosts
    return share - slack, share + slack
