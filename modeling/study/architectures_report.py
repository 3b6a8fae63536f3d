"""The architecture comparison's report: `comparison.json`, `comparison.md` and `comparison.png` (see
`architectures.py`)."""

from pathlib import Path

import matplotlib.pyplot as plt

from ..files import write_json
from .render import error_bars, rate_axis, save_figure, signed, with_interval

PANELS = (
    ("known_accuracy", "test known accuracy"),
    ("unknown_hallucination_rate", "test unknown hallucination rate"),
    ("confidence_auroc", "confidence AUROC (right vs hallucinated)"),
)


def reading(difference: dict, labels: list[str], more: str, less: str) -> str:
    """Which side the interval of a difference (first minus second) points to, or "inconclusive"."""
    if difference["low"] is None:
        return "undefined"
    if difference["low"] > 0:
        return f"{labels[0]} {more}"
    if difference["high"] < 0:
        return f"{labels[0]} {less}"
    return "inconclusive"


def _table(figure: dict, labels: list[str], key: str = "at_share", header: str = "unknown share") -> list[str]:
    lines = [
        f"| {header} | {labels[0]} | {labels[1]} | {labels[0]} minus {labels[1]} | per world |",
        "|---|---|---|---|---|",
    ]
    for share, compared in figure[key].items():
        worlds = ", ".join(f"{value:+.2f}" for value in compared["per_world"])
        sides = " | ".join(with_interval(side) for side in compared["sides"])
        lines.append(f"| {float(share):.0%} | {sides} | {signed(compared['difference'])} | {worlds} |")
    return lines


def _answers(comparison: dict) -> list[str]:
    labels, shares = comparison["labels"], [str(s) for s in comparison["shares"]]
    last = shares[-1]
    loss = comparison["known_accuracy"]["change_from_0"][last]["difference"]
    lines = [
        f"- **Known people as the unknown share grows** (test known accuracy at {float(last):.0%} unknown minus at 0%, "
        f"{labels[0]} minus {labels[1]}): {signed(loss)}: "
        f"{reading(loss, labels, 'loses less', 'loses more')}.",
    ]
    for name, question, more, less in (
        ("unknown_hallucination_rate", "Hallucination on unknown people", "hallucinates more", "hallucinates less"),
        ("confidence_auroc", "Detection by the confidence", "detects better", "detects worse"),
    ):
        cells = [
            f"{float(s):.0%}: {signed(comparison[name]['at_share'][s]['difference'])} "
            f"({reading(comparison[name]['at_share'][s]['difference'], labels, more, less)})"
            for s in shares
        ]
        lines.append(f"- **{question}** ({labels[0]} minus {labels[1]}, by unknown share): " + "; ".join(cells) + ".")
    return lines


def plot_comparison(comparison: dict, path: Path) -> None:
    """Each panel's figure against the unknown share, one line per architecture, with 95% intervals."""
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.2))
    shares = [str(s) for s in comparison["shares"]]
    for ax, (name, title) in zip(axes, PANELS, strict=True):
        for side, label in enumerate(comparison["labels"]):
            cells = [comparison[name]["at_share"][s]["sides"][side] for s in shares]
            if all(cell["low"] is not None for cell in cells):
                estimates, errors = error_bars(cells)
                ax.errorbar([float(s) + 0.01 * side for s in shares], estimates, yerr=errors, fmt="o-", capsize=3,
                            label=label)  # fmt: skip
        ax.set_xlabel("share of unknown facts in the fine-tune set")
        ax.set_title(title)
        rate_axis(ax)
        if ax.get_legend_handles_labels()[0]:  # a panel whose figures are all undefined has no line
            ax.legend(fontsize=8)
    save_figure(fig, path)


def write_comparison(comparison: dict, out_dir: Path) -> Path:
    """`comparison.json`, `comparison.png` and `comparison.md` in `out_dir`; returns the report's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(comparison, out_dir / "comparison.json")
    plot_comparison(comparison, out_dir / "comparison.png")
    labels = comparison["labels"]
    minutes = ", ".join(
        f"{label} {seconds / 60:.0f}" for label, seconds in zip(labels, comparison["seconds"], strict=True)
    )
    lines = [
        f"# {labels[0]} against {labels[1]} on the same worlds",
        "",
        f"Studies: {', '.join(f'`{s}` ({label})' for s, label in zip(comparison['studies'], labels, strict=True))}; "
        f"worlds (seeds) {comparison['worlds']}; the plain full fine-tunings at unknown shares "
        f"{', '.join(f'{s:.0%}' for s in comparison['shares'])}; test people at each run's last epoch. Every figure is "
        "the mean over the worlds of each world's mean over its training seeds. Intervals: 95% percentile, a paired "
        f"two-level bootstrap over test people and training seeds within each world ({comparison['resamples']:,} "
        "resamples, the same draws for both architectures), worlds kept as strata; they do not include how much the "
        "worlds differ, which the per-world differences show. Time of the two studies, all stages, as their "
        f"results record it (a stage reused from an earlier run counts 0), in minutes: {minutes}.",
        "",
        "## Answers",
        "",
        *_answers(comparison),
        "",
        "## Before fine-tuning (the pre-trained models on the test known people)",
        "",
        f"Known accuracy at epoch 0: {labels[0]} {with_interval(comparison['pretrained_known_accuracy']['sides'][0])}, "
        f"{labels[1]} {with_interval(comparison['pretrained_known_accuracy']['sides'][1])}; difference "
        f"{signed(comparison['pretrained_known_accuracy']['difference'])}.",
    ]
    for name, title in PANELS:
        lines += ["", f"## {title[0].upper()}{title[1:]}", "", *_table(comparison[name], labels)]
        if name == "known_accuracy":
            lines += ["", "Its change from the 0% share:", ""]
            lines += _table(comparison[name], labels, "change_from_0")
    lines += ["", "![comparison](comparison.png)", ""]
    path = out_dir / "comparison.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


__all__ = ["plot_comparison", "reading", "write_comparison"]
