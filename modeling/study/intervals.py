"""95% interval of a figure over whole-study seeds (the rates, differences and AUROCs: see `evidence.py`)."""

import math

from scipy import stats


def t_interval(values: list[float]) -> tuple[float, float] | None:
    """95% Student t-interval of the mean of `values` (independent runs, e.g. seeds); None for fewer than two."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    return mean - half, mean + half


__all__ = ["t_interval"]
