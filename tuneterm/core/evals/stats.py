"""Confidence intervals and paired tests for eval scores (pure Python, deterministic).

- ``wilson``: 95% interval of a proportion (right/wrong scores).
- ``bootstrap_ci``: percentile bootstrap of any statistic over items (seeded).
- ``mcnemar_exact``: exact two-sided McNemar test on the discordant pairs (fixed vs broken).
- ``paired_bootstrap``: CI and two-sided p of the difference of a statistic on the same items.
- ``min_detectable``: the smallest difference n paired items can resolve (a warning threshold).
"""

from __future__ import annotations

import math
import random
from typing import Callable, Sequence

Z95 = 1.959963984540054


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1, 0.0, 1.0, True, False) for v in values)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    pos = q * (len(sorted_vals) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def resample_indices(n: int, rounds: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(n) for _ in range(n)] for _ in range(rounds)]


def bootstrap_ci(n: int, statistic: Callable[[list[int]], float], rounds: int = 1000,
                 seed: int = 1234) -> tuple[float, float]:
    """95% percentile interval of ``statistic(indices)`` over ``rounds`` resamples of n items."""
    if n == 0:
        return (float("nan"), float("nan"))
    vals = sorted(v for v in (statistic(idx) for idx in resample_indices(n, rounds, seed)) if not math.isnan(v))
    return (_percentile(vals, 0.025), _percentile(vals, 0.975))


def mcnemar_exact(fixed: int, broken: int) -> float:
    """Two-sided exact p of McNemar's test: binomial(fixed+broken, 0.5) on the discordant pairs."""
    n = fixed + broken
    if n == 0:
        return 1.0
    k = min(fixed, broken)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(n: int, statistic_a: Callable[[list[int]], float], statistic_b: Callable[[list[int]], float],
                     rounds: int = 1000, seed: int = 1234) -> tuple[tuple[float, float], float]:
    """CI of stat_b - stat_a on the same resampled items, and a two-sided bootstrap p."""
    if n == 0:
        return (float("nan"), float("nan")), 1.0
    diffs = []
    for idx in resample_indices(n, rounds, seed):
        d = statistic_b(idx) - statistic_a(idx)
        if not math.isnan(d):
            diffs.append(d)
    diffs.sort()
    if not diffs:
        return (float("nan"), float("nan")), 1.0
    below = sum(1 for d in diffs if d <= 0) / len(diffs)
    above = sum(1 for d in diffs if d >= 0) / len(diffs)
    p = min(1.0, 2 * min(below, above))
    return (_percentile(diffs, 0.025), _percentile(diffs, 0.975)), p


def min_detectable(n: int, p: float = 0.5, power_z: float = 0.8416) -> float:
    """Rough minimum detectable difference of a proportion with n paired items (alpha 0.05, power 0.8).

    Uses the unpaired binomial SE as a conservative stand-in for the paired one.
    """
    if n <= 0:
        return float("inf")
    se = math.sqrt(2 * max(p * (1 - p), 0.05 * 0.95) / n)
    return (Z95 + power_z) * se
