"""How the study's reports write a rate, a difference and a plot, shared by the study's, the sweep's and the
causes' reports (and the demo)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on machines without a display
import matplotlib.pyplot as plt


def with_interval(rate: dict | None) -> str:
    """A rate of `evidence.rate_interval` as "0.42 [0.30, 0.55]"."""
    if rate is None or rate["estimate"] is None:
        return "n/a"
    return f"{rate['estimate']:.2f} [{rate['low']:.2f}, {rate['high']:.2f}]"


def signed(difference: dict) -> str:
    """A difference of `evidence.difference_interval` as "+0.12 [+0.03, +0.20]"."""
    if difference["estimate"] is None or difference["low"] is None:
        return "n/a"
    return f"{difference['estimate']:+.2f} [{difference['low']:+.2f}, {difference['high']:+.2f}]"


def error_bars(cells: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Estimates and matplotlib's `yerr` (distances below and above) of intervals (`evidence`'s dicts)."""
    estimates = [cell["estimate"] for cell in cells]
    below = [estimate - cell["low"] for estimate, cell in zip(estimates, cells, strict=True)]
    above = [cell["high"] - estimate for estimate, cell in zip(estimates, cells, strict=True)]
    return estimates, [below, above]


def rate_axis(ax: plt.Axes) -> None:
    """A y axis for rates, 0 to 1, with a light grid."""
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Save `fig` as a PNG at `path` and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["error_bars", "rate_axis", "save_figure", "signed", "with_interval"]
