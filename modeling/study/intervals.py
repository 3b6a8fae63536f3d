"""95% intervals for the study's figures, which come from small held-out sets."""

import math

from scipy import stats

Z95 = 1.959964  # two-sided 95% quantile of the standard normal


def wilson_interval(rate: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion `rate` observed over `n` trials (Wilson, 1927); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    centre = (rate + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(rate * (1 - rate) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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


__all__ = ["Z95", "auroc_interval", "t_interval", "wilson_interval"]
