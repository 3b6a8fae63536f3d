"""95% intervals of the detector's AUROC and of a figure over whole-study seeds (the rates and differences: see
`evidence.py`)."""

import math

from scipy import stats

Z95 = 1.959964  # two-sided 95% quantile of the standard normal


def auroc_interval(value: float, num_correct: int, num_wrong: int) -> tuple[float, float]:
    """Approximate 95% interval of an AUROC from its standard error (Hanley & McNeil, 1982, equation 2)."""
    q1, q2 = value / (2 - value), 2 * value**2 / (1 + value)
    variance = (value * (1 - value) + (num_correct - 1) * (q1 - value**2) + (num_wrong - 1) * (q2 - value**2)) / (
        num_correct * num_wrong
    )
    half = Z95 * math.sqrt(max(variance, 0.0))
    return max(0.0, value - half), min(1.0, value + half)


def t_interval(values: list[float]) -> tuple[float, float] | None:
    """95% Student t-interval of the mean of `values` (independent runs, e.g. seeds); None for fewer than two."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = stats.t.ppf(0.975, len(values) - 1) * sd / math.sqrt(len(values))
    return mean - half, mean + half


__all__ = ["Z95", "auroc_interval", "t_interval"]
