"""Small statistics helpers: percentiles of samples and medians of runs."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def percentiles(samples: Sequence[float], *ps: float) -> list[float]:
    """The `ps` percentiles (0-100) by linear interpolation; NaN for no samples."""
    if not samples:
        return [float("nan")] * len(ps)
    ordered = sorted(samples)
    out = []
    for p in ps:
        pos = (len(ordered) - 1) * p / 100
        lo = int(pos)
        hi = min(lo + 1, len(ordered) - 1)
        out.append(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo))
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
