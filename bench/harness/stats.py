"""Medians and percentiles of samples, computed the same way in every bench."""

from __future__ import annotations

import math
import statistics


def median(values) -> float:
    return statistics.median(values)


def percentile(values, pct: float) -> float:
    """The ``pct``-th percentile (0 to 100) of the samples, interpolated linearly between the
    two nearest (as ``statistics.quantiles(method="inclusive")`` and numpy's default do); one
    sample is its own percentile, and no sample gives NaN."""
    values = sorted(values)
    if not values:
        return math.nan
    at = (len(values) - 1) * pct / 100
    low = math.floor(at)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (at - low)


def p90(values) -> float:
    return percentile(values, 90)
