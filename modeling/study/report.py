"""The study's plots and `report.md`: what was run, the figures with 95% intervals, and each finding of Gekhman et al.
(2024) checked against ours."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: runs happen on machines without a display
import matplotlib.pyplot as plt

from ..files import write_json
from .intervals import auroc_interval, t_interval, wilson_interval


def _with_interval(rate: float | None, n: int) -> str:
    if rate is None:
        return "n/a"
    low, high = wilson_interval(rate, n)
    return f"{rate:.2f} [{low:.2f}, {high:.2f}]"


def _plain(conditions: list[dict], method: str = "full", size: int | None = None) -> list[dict]:
    return sorted(
        (
            c
            for c in conditions
            if c["mitigation"] == "none" and c["method"] == method and (size is None or c["finetune_size"] == size)
        ),
        key=lambda c: c["fraction_unknown"],
    )


def _find(conditions: list[dict], fraction: float, mitigation: str, size: int) -> dict | None:
    for c in conditions:
        if (c["fraction_unknown"], c["mitigation"], c["method"], c["finetune_size"]) == (
            fraction,
            mitigation,
            "full",
            size,
        ):
            return c
    return None


def answered_accuracy(record: dict, set_sizes: dict[str, int]) -> tuple[float | None, float]:
    """Accuracy on the answered held-out questions, known and unknown people pooled as in Gekhman et al.'s test set,
    and the share answered; the accuracy is None when nothing was answered."""
    sizes = {group: set_sizes.get(f"test_{group}", 0) for group in ("known", "unknown")}
    correct = sum(record[f"test_{g}_accuracy"] * n for g, n in sizes.items() if n)
    answered = sum((1 - record[f"test_{g}_abstention_rate"]) * n for g, n in sizes.items() if n)
    total = sum(sizes.values())
    return (correct / answered if answered else None), answered / total


def _rate_axis(ax: plt.Axes) -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


SEED_FIGURES = (
    "test_known_accuracy",
    "test_highly_known_accuracy",
    "test_known_hallucination_rate",
    "test_unknown_hallucination_rate",
    "test_unknown_abstention_rate",
)


def write_seed_summary(runs: dict[int, dict], out_dir: Path) -> None:
    """`seeds.json` and `seeds.md`: for each condition, each figure of `SEED_FIGURES` at the last epoch, its value for
    each seed (`runs`: seed -> that seed's results.json; a seed that lacks the figure is left out), their mean and a
    95% Student t-interval of the mean clipped to [0, 1] (None from fewer than two seeds)."""
    summary: dict[str, dict[str, dict]] = {}
    for seed, results in runs.items():
        for condition in results["conditions"]:
            if condition.get("skipped"):
                continue
            record = condition["per_epoch"][-1]
            for figure in SEED_FIGURES:
                if record.get(figure) is not None:
                    entry = summary.setdefault(condition["name"], {}).setdefault(figure, {"values": {}})
                    entry["values"][str(seed)] = record[figure]
    for figures in summary.values():
        for entry in figures.values():
            values = list(entry["values"].values())
            entry["mean"] = sum(values) / len(values)
            interval = t_interval(values)  # rates: clipped to [0, 1] like the other intervals
            entry["interval"] = None if interval is None else [max(0.0, interval[0]), min(1.0, interval[1])]
    write_json({"seeds": list(runs), "conditions": summary}, out_dir / "seeds.json")
    lines = [f"# The study over {len(runs)} seeds ({', '.join(map(str, runs))})", ""]
    lines += [
        "Mean at the last epoch over the seeds, with a 95% t-interval of the mean; each seed has its own world, "
        "pre-training and fine-tune draws (`seed_<S>/report.md` has each run).",
        "",
    ]
    lines += ["| condition | " + " | ".join(f.replace("_", " ") for f in SEED_FIGURES) + " |"]
    lines += ["|---" * (len(SEED_FIGURES) + 1) + "|"]
    for name, figures in summary.items():
        cells = []
        for figure in SEED_FIGURES:
            entry = figures.get(figure)
            if entry is None:
                cells.append("n/a")
                continue
            low_high, mean = entry["interval"], f"{entry['mean']:.2f} (n={len(entry['values'])})"
            cells.append(mean if low_high is None else f"{mean} [{low_high[0]:.2f}, {low_high[1]:.2f}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out_dir / "seeds.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def time_breakdown(results: dict) -> list[tuple[str, float]]:
    """Where a study's time went, from `results.json`: (part, seconds) for pre-training, the probe, the fine-tunings'
    set-up, training, per-epoch evaluation, detector and saving, and the report, in that order. Conditions reused
    from an earlier run count the seconds they took then: time a fresh run."""
    timings = results["timings"]
    parts = {"pre-training": timings.get("pretrain", 0.0), "probe": timings.get("probe", 0.0)}
    for part in ("setup", "training", "evaluation", "detector", "save"):
        parts[f"fine-tuning: {part}"] = sum(c.get("timing", {}).get(part, 0.0) for c in results["conditions"])
    if "report" in timings:  # not yet while the report itself is written
        parts["results, plots and report"] = timings["report"]
    return list(parts.items())


def plot_headline(conditions: list[dict], size: int, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in _plain(conditions, size=size):
        epochs = [r["epoch"] for r in c["per_epoch"]]
        label = f"{c['fraction_unknown']:.0%} unknown"
        left.plot(epochs, [r["test_known_accuracy"] for r in c["per_epoch"]], "o-", label=label)
        right.plot(epochs, [r["test_unknown_hallucination_rate"] for r in c["per_epoch"]], "o-", label=label)
    left.set_title("Held-out known people: accuracy")
    right.set_title("Held-out unknown people: hallucination rate")
    for ax in (left, right):
        ax.set_xlabel("fine-tuning epoch")
        _rate_axis(ax)
        ax.legend(title="fine-tune set")
    fig.suptitle("Fine-tuning on facts the model never saw (full fine-tuning)")
    _save(fig, path)


def plot_fitting(condition: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in condition["per_epoch"]]
    for key, label in (
        ("finetune_known_exact_match", "known people"),
        ("finetune_unknown_exact_match", "unknown people"),
    ):
        values = [r[key] for r in condition["per_epoch"]]
        if all(v is not None for v in values):
            ax.plot(epochs, values, "o-", label=label)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("share of fine-tune answers fitted")
    ax.set_title(f"How fast each kind is fitted ({condition['fraction_unknown']:.0%} unknown)")
    _rate_axis(ax)
    ax.legend()
    _save(fig, path)


def plot_sizes(conditions: list[dict], fraction: float, path: Path) -> None:
    runs = sorted(
        (
            c
            for c in conditions
            if c["mitigation"] == "none" and c["method"] == "full" and c["fraction_unknown"] == fraction
        ),
        key=lambda c: c["finetune_size"],
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = [c["finetune_size"] for c in runs]
    ax.plot(sizes, [c["per_epoch"][-1]["test_known_accuracy"] for c in runs], "o-", label="at the last epoch")
    ax.plot(sizes, [max(r["test_known_accuracy"] for r in c["per_epoch"]) for c in runs], "s--", label="best epoch")
    ax.set_xscale("log")
    ax.set_xlabel("fine-tune set size (questions)")
    ax.set_ylabel("held-out known accuracy")
    ax.set_title(f"Accuracy vs fine-tune set size ({fraction:.0%} unknown)")
    _rate_axis(ax)
    ax.legend()
    _save(fig, path)


def plot_mitigations(rows: list[tuple[str, dict]], path: Path) -> None:
    figures = (
        ("test_known_accuracy", "known: accuracy"),
        ("test_unknown_hallucination_rate", "unknown: hallucination"),
        ("test_unknown_abstention_rate", "unknown: abstention"),
    )
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(rows)
    for index, (label, record) in enumerate(rows):
        positions = [i + index * width for i in range(len(figures))]
        ax.bar(positions, [record[key] for key, _ in figures], width, label=label)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(figures))], [name for _, name in figures])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate on held-out people")
    ax.set_title("Mitigations against the plain run at the same share of unknown facts")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def plot_risk_coverage(condition: dict, path: Path) -> None:
    detector = condition["detector"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, points in detector["risk_coverage"].items():
        auc = detector["auroc"][name]
        label = name.replace("_", " ") + ("" if auc is None else f" (AUROC {auc:.2f})")
        ax.plot(*zip(*points, strict=True), "-", label=label)
    chosen = detector["selective"]
    if chosen["accuracy_answered"] is not None:
        ax.plot(chosen["coverage"], chosen["accuracy_answered"], "k*", markersize=12, label="threshold chosen on dev")
    answer_all = detector["answer_all"]
    if answer_all["accuracy_answered"] is not None:
        ax.axhline(answer_all["accuracy_answered"], color="grey", ls=":", label="answer everything")
    ax.set_xlabel("share of held-out questions answered (coverage)")
    ax.set_ylabel("accuracy on the answered questions")
    ax.set_title(f"Selective answering, {condition['name']}")
    _rate_axis(ax)
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=8)
    _save(fig, path)


def _epochs_to_fit(condition: dict, key: str, level: float = 0.9) -> int | None:
    return next((r["epoch"] for r in condition["per_epoch"] if (r[key] or 0) >= level), None)


def write_plots(conditions: list[dict], config: dict, out_dir: Path) -> None:
    """The report's plots of the trained `conditions` into `out_dir`: each only when its conditions were run."""
    size, fraction = config["finetune_size"], config["mitigation_fraction"]
    plot_headline(conditions, size, out_dir / "headline.png")
    plain = _find(conditions, fraction, "none", size)
    if plain:
        plot_fitting(plain, out_dir / "fitting.png")
    plot_sizes(conditions, config["size_fraction"], out_dir / "sizes.png")
    mitigation_rows = [("plain, last epoch", plain["per_epoch"][-1])] if plain else []
    for mitigation in ("early_stopping", "filter_unknown", "abstention"):
        found = _find(conditions, fraction, mitigation, size)
        if found:
            mitigation_rows.append((mitigation.replace("_", " "), found["per_epoch"][-1]))
    if mitigation_rows:
        plot_mitigations(mitigation_rows, out_dir / "mitigations.png")
    if plain and plain.get("detector"):
        plot_risk_coverage(plain, out_dir / "risk_coverage.png")


def _probe_table(agreement: dict[str, dict[str, int]]) -> list[str]:
    lines = ["| designed | highly known | maybe known | weakly known | unknown |", "|---|---|---|---|---|"]
    for designed, counts in agreement.items():
        total = sum(counts.values()) or 1
        lines.append(f"| {designed} | " + " | ".join(f"{counts[c] / total:.2f}" for c in counts) + " |")
    return lines


def _conditions_table(conditions: list[dict]) -> list[str]:
    lines = [
        "The intervals count each question as an independent trial; the six questions about one person are not, "
        "so the true uncertainty is somewhat wider.",
        "",
        "| condition | epochs | fitted known / unknown | held-out known accuracy | held-out known hallucination | "
        "held-out unknown hallucination | held-out unknown abstention |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in conditions:
        r, n = c["per_epoch"][-1], c["set_sizes"]
        fitted = " / ".join(
            "n/a" if r[k] is None else f"{r[k]:.2f}"
            for k in ("finetune_known_exact_match", "finetune_unknown_exact_match")
        )
        lines.append(
            f"| {c['name']} | {r['epoch']} | {fitted} | "
            f"{_with_interval(r['test_known_accuracy'], n['test_known'])} | "
            f"{_with_interval(r['test_known_hallucination_rate'], n['test_known'])} | "
            f"{_with_interval(r['test_unknown_hallucination_rate'], n['test_unknown'])} | "
            f"{_with_interval(r['test_unknown_abstention_rate'], n['test_unknown'])} |"
        )
    return lines


def write_report(results: dict, out_dir: Path) -> Path:
    """Write the plots and `report.md` for `results` (the content of results.json) into `out_dir`."""
    config = results["config"]
    skipped = [c["name"] for c in results["conditions"] if c.get("skipped")]
    conditions = [c for c in results["conditions"] if not c.get("skipped")]
    write_plots(conditions, config, out_dir)
    plain = _find(conditions, config["mitigation_fraction"], "none", config["finetune_size"])
    lines = ["# Fine-tuning hallucination study", ""]
    lines += ["Settings (`results.json` has them all): " + ", ".join(f"`{k}`={config[k]}" for k in sorted(config)), ""]
    lines += ["Where the time went (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in time_breakdown(results))]
    if results.get("reused"):
        lines += [f"(This run reused {', '.join(results['reused'])} from an earlier one: their time is not counted.)"]
    lines += ["", "## What pre-training taught (probe, per designed category)", ""]
    lines += _probe_table(results["probe"]["agreement"])
    lines += ["", "## Every condition at its last epoch (95% Wilson intervals over held-out test questions)", ""]
    lines += _conditions_table(conditions)
    if skipped:
        lines += ["", f"Skipped, with no fine-tune example left after filtering: {', '.join(skipped)}."]
    lines += ["", "## The model's own signals as a hallucination detector (test people, last epoch)", ""]
    lines += _detection(conditions, plain)
    lines += ["", "## The findings of Gekhman et al. (2024), checked one by one", ""]
    lines += findings(conditions, config)
    lines += [""]
    lines += [
        f"![{name}]({name}.png)\n"
        for name in ("headline", "fitting", "sizes", "mitigations", "risk_coverage")
        if (out_dir / f"{name}.png").is_file()
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _auroc_cell(detector: dict, name: str) -> str:
    value = detector["auroc"].get(name)
    if value is None:
        return "n/a"
    correct = detector["num_test_correct"]
    low, high = auroc_interval(value, correct, detector["num_test_answered"] - correct)
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def _detection(conditions: list[dict], plain: dict | None) -> list[str]:
    """The detector table (AUROC of each signal, with Hanley-McNeil 95% intervals) and selective answering."""
    lines = [
        "Known and unknown test people pooled; the hidden-state probe is fitted on the dev people. AUROC 0.5 is "
        "chance, 1.0 a perfect split of right from wrong answers.",
        "",
        "| condition | answered | correct | confidence AUROC | hidden-state probe AUROC |",
        "|---|---|---|---|---|",
    ]
    for c in conditions:
        detector = c.get("detector")
        if detector:
            lines.append(
                f"| {c['name']} | {detector['num_test_answered']} of {detector['num_test']} | "
                f"{detector['num_test_correct']} | {_auroc_cell(detector, 'confidence')} | "
                f"{_auroc_cell(detector, 'hidden_state_probe')} |"
            )
    if plain and plain.get("detector"):
        detector = plain["detector"]
        chosen, everything = detector["selective"], detector["answer_all"]
        shown = [
            "n/a" if v is None else f"{v:.2f}" for v in (chosen["accuracy_answered"], everything["accuracy_answered"])
        ]
        lines += [
            "",
            f"Selective answering on {plain['name']}, with the threshold chosen on dev: answering only when the "
            f"confidence is {_threshold(detector['threshold'])} gives accuracy {shown[0]} on "
            f"{chosen['coverage']:.0%} of the test questions answered, hallucinating on "
            f"{chosen['hallucination_rate']:.0%} of all test questions; answering "
            f"everything: {shown[1]} on {everything['coverage']:.0%}, hallucinating on "
            f"{everything['hallucination_rate']:.0%}.",
        ]
    return lines


def _threshold(value: float | None) -> str:
    if value is None:
        return "above every confidence (no threshold gained on dev, so nothing is answered)"
    return f"at least {value:.3g}"


def _verdict(
    holds: bool, a: tuple[float, int] | None = None, b: tuple[float, int] | None = None, claims_a_difference=True
) -> str:
    """ "reproduced" or "not reproduced" by the point estimates of the two rates compared ((rate, questions) each).
    When their 95% intervals overlap, a finding that claims a difference is "not shown" (the difference is within
    the noise), and one that claims no difference says that the noise allows it."""
    if a is None or b is None:
        return "**reproduced**" if holds else "**not reproduced**"
    (low_a, high_a), (low_b, high_b) = wilson_interval(*a), wilson_interval(*b)
    if not (low_a <= high_b and low_b <= high_a):
        return "**reproduced**" if holds else "**not reproduced**"
    if claims_a_difference:
        return "**not shown**: the 95% intervals overlap, the difference is within the noise of these held-out sets"
    verdict = "**reproduced**" if holds else "**not reproduced**"
    return verdict + " (within the noise: the 95% intervals overlap)"


def _points(difference: float) -> str:
    points = round(100 * difference)
    return f"{points} point" + ("" if abs(points) == 1 else "s")


def _finding_unknown_share(grid: list[dict]) -> str:
    first, last = grid[0]["per_epoch"][-1], grid[-1]["per_epoch"][-1]
    holds = last["test_known_accuracy"] < first["test_known_accuracy"]
    pair = [(r["test_known_accuracy"], c["set_sizes"]["test_known"]) for r, c in ((first, grid[0]), (last, grid[-1]))]
    return (
        f"1. Test accuracy falls as the share of unknown fine-tune examples grows (theirs: yes, monotonically). "
        f"Ours, at the last epoch: {first['test_known_accuracy']:.2f} with "
        f"{grid[0]['fraction_unknown']:.0%} unknown, {last['test_known_accuracy']:.2f} with "
        f"{grid[-1]['fraction_unknown']:.0%}: {_verdict(holds, *pair)}."
    )


def _finding_late_harm(plain: dict, stopped: dict) -> str:
    questions = plain["set_sizes"]["test_known"]
    early, late = (c["per_epoch"][-1]["test_known_accuracy"] for c in (stopped, plain))
    return (
        f"2. The harm comes late, as the unknown examples are fitted (theirs: up to 14 points between early "
        f"stopping and convergence). Ours: {early:.2f} at the epoch chosen on dev ({stopped['selected_epoch']}), "
        f"{late:.2f} at the last epoch, a drop of {_points(early - late)}: "
        f"{_verdict(early > late, (early, questions), (late, questions))}."
    )


def _finding_slow_fitting(plain: dict) -> str:
    known, unknown = (_epochs_to_fit(plain, k) for k in ("finetune_known_exact_match", "finetune_unknown_exact_match"))
    holds = known is not None and (unknown is None or unknown > known)
    return (
        f"3. Unknown examples are fitted more slowly than known ones (theirs: yes). Ours: 90% of the known ones "
        f"fitted by epoch {known}, of the unknown ones by epoch {unknown}: {_verdict(holds)}."
    )


def _finding_filtering(plain: dict, filtered: dict) -> str:
    kept, full = (c["per_epoch"][-1]["test_known_accuracy"] for c in (filtered, plain))
    pair = (kept, filtered["set_sizes"]["test_known"]), (full, plain["set_sizes"]["test_known"])
    return (
        f"4. Dropping the unknown examples costs little (theirs: no loss, even a gain at convergence). Ours: "
        f"{kept:.2f} without them ({filtered['num_examples']} examples) against {full:.2f} with all: "
        f"{_verdict(kept >= full - 0.02, *pair, False)}."
    )


def _finding_abstention(plain: dict, abstained: dict) -> str:
    accuracy, answered = answered_accuracy(abstained["per_epoch"][-1], abstained["set_sizes"])
    plain_accuracy, plain_answered = answered_accuracy(plain["per_epoch"][-1], plain["set_sizes"])
    shown = ["n/a" if value is None else f"{value:.2f}" for value in (accuracy, plain_accuracy)]
    return (
        f'5. Relabelling unknown examples "I don\'t know" raises accuracy on the answered questions (theirs: '
        f"61.8% on about 56% answered, against 38.8%). Ours, over the held-out known and unknown people: "
        f"{shown[0]} on {answered:.0%} answered, against {shown[1]} on {plain_answered:.0%}: "
        f"{_verdict((accuracy or 0) > (plain_accuracy or 0))}."
    )


def findings(conditions: list[dict], config: dict) -> list[str]:
    """One paragraph per finding whose conditions were run: theirs, ours, and whether ours agrees (by the point
    estimates; the intervals in the table above say how far to trust a small difference)."""
    size, fraction = config["finetune_size"], config["mitigation_fraction"]
    grid = _plain(conditions, size=size)
    plain, stopped, filtered, abstained = (
        _find(conditions, fraction, mitigation, size)
        for mitigation in ("none", "early_stopping", "filter_unknown", "abstention")
    )
    lines = [_finding_unknown_share(grid)] if len(grid) >= 2 else []
    if plain and stopped:
        lines.append(_finding_late_harm(plain, stopped))
    if plain and plain["per_epoch"][-1]["finetune_unknown_exact_match"] is not None:
        lines.append(_finding_slow_fitting(plain))
    if plain and filtered:
        lines.append(_finding_filtering(plain, filtered))
    if plain and abstained:
        lines.append(_finding_abstention(plain, abstained))
    return lines


__all__ = [
    "SEED_FIGURES",
    "answered_accuracy",
    "findings",
    "time_breakdown",
    "write_plots",
    "write_report",
    "write_seed_summary",
]
