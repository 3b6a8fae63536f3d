"""The study's plots and `report.md`: what was run, the figures with 95% intervals, and each finding of Gekhman et al.
(2024) checked against ours."""

from pathlib import Path

import matplotlib.pyplot as plt

from ..files import write_json
from .causes_report import cause_lines, write_cause_plots
from .config import MITIGATIONS, Condition, by_condition
from .detection_report import detection_lines, write_detection_plots
from .error_sources import SOURCES
from .findings import REPORTED_RATES
from .intervals import t_interval
from .render import error_bars, rate_axis, save_figure, signed, with_interval


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 100_000 else f"{num_bytes / 1e3:.0f} kB"


def _plain(conditions: list[dict], method: str = "full", size: int | None = None) -> list[dict]:
    return sorted(
        (
            c
            for c in conditions
            if c["mitigation"] == "none" and c["method"] == method and (size is None or c["finetune_size"] == size)
        ),
        key=lambda c: c["fraction_unknown"],
    )


def _full(conditions: list[dict], config: dict, mitigation: str) -> dict | None:
    """The full fine-tuning at the study's `mitigation_fraction` and `finetune_size` with `mitigation`, if run."""
    wanted = Condition(config["mitigation_fraction"], "full", mitigation, config["finetune_size"])
    return by_condition(conditions).get(wanted)


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
    """Where a study's time went, from `results.json`: (part, seconds) for pre-training, the probe, the pre-trained
    model's answers (epoch 0), the fine-tunings' set-up, training, per-epoch evaluation, detector and saving (summed
    over every run), and the report, in that order. Conditions reused
    from an earlier run count the seconds they took then: time a fresh run."""
    timings = results["timings"]
    parts = {"pre-training": timings.get("pretrain", 0.0), "probe": timings.get("probe", 0.0)}
    parts["epoch 0 answers"] = timings.get("epoch0", 0.0)
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
        rate_axis(ax)
        ax.legend(title="fine-tune set")
    fig.suptitle("Fine-tuning on facts the model never saw (full fine-tuning)")
    save_figure(fig, path)


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
    rate_axis(ax)
    ax.legend()
    save_figure(fig, path)


def plot_mitigations(rows: list[tuple[str, dict]], path: Path) -> None:
    """Bars of each row's test rates (`evidence` intervals by rate: estimate, low, high) with their 95% intervals."""
    figures = (
        ("test_known_accuracy", "known: accuracy"),
        ("test_unknown_hallucination_rate", "unknown: hallucination"),
        ("test_unknown_abstention_rate", "unknown: abstention"),
    )
    fig, ax = plt.subplots(figsize=(9, 4.2))
    width = 0.8 / len(rows)
    for index, (label, rates) in enumerate(rows):
        positions = [i + index * width for i in range(len(figures))]
        estimates, errors = error_bars([rates[key] for key, _ in figures])
        ax.bar(positions, estimates, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(figures))], [name for _, name in figures])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate on held-out people")
    ax.set_title("Mitigations against the plain run at the same share of unknown facts (95% intervals)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    save_figure(fig, path)


def plot_error_sources(epochs: list[dict], name: str, path: Path) -> None:
    """Stacked shares of each source of the hallucinated test answers of one condition, epoch by epoch, with the
    chance shares of the two that fine-tuning taught."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    shown = [e for e in epochs if e["hallucinated"]]
    x = [e["epoch"] for e in shown]
    bottom = [0.0] * len(shown)
    for source in SOURCES:
        shares = [e["shares"][source] for e in shown]
        left.bar(x, shares, bottom=bottom, label=source.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, shares, strict=True)]
    left.set_xlabel("fine-tuning epoch")
    left.set_ylabel("share of hallucinated test answers")
    left.set_title(f"Where the wrong answers come from\n{name}")
    left.legend(fontsize=8)
    for source, style in (("hedged_default", "o-"), ("borrowed", "s-")):
        right.plot(x, [e["shares"][source] for e in shown], style, label=f"{source.replace('_', ' ')}: observed")
        right.plot(
            x,
            [e["chance"][source] for e in shown],
            style.replace("-", ":"),
            label=f"{source.replace('_', ' ')}: chance",
        )
    right.set_xlabel("fine-tuning epoch")
    right.set_title("Taught answers: observed against chance")
    right.legend(fontsize=8)
    for ax in (left, right):
        rate_axis(ax)
    save_figure(fig, path)


def plot_reliability(curves: list[tuple[str, dict]], path: Path) -> None:
    """Reliability diagram: accuracy against mean confidence per bin, one curve per (label, `calibration`)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", label="calibrated")
    for label, curve in curves:
        bins = curve["bins"]
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-",
                    label=f"{label} (ECE {curve['ece']:.2f})")  # fmt: skip
    ax.set_xlabel("confidence: exp(mean log-probability of the answer)")
    ax.set_ylabel("accuracy of the answers in the bin")
    ax.set_title("Calibration on the test people")
    ax.set_xlim(-0.02, 1.02)
    rate_axis(ax)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_plots(conditions: list[dict], results: dict, out_dir: Path) -> None:
    """The report's plots of the trained `conditions` of `results` into `out_dir`: each only when its conditions
    were run."""
    config = results["config"]
    plot_headline(conditions, config["finetune_size"], out_dir / "headline.png")
    plain = _full(conditions, config, "none")
    if plain:
        plot_fitting(plain, out_dir / "fitting.png")
    rates = results["intervals"]["conditions"]  # the last epoch's rates with their intervals
    mitigation_rows = [("plain, last epoch", rates[plain["name"]])] if plain else []
    for mitigation in MITIGATIONS:
        found = _full(conditions, config, mitigation)
        if found and found["name"] in rates:
            mitigation_rows.append((mitigation.replace("_", " "), rates[found["name"]]))
    if mitigation_rows:
        plot_mitigations(mitigation_rows, out_dir / "mitigations.png")
    write_detection_plots(results, plain, out_dir)
    if plain and plain["name"] in results["error_sources"]:
        plot_error_sources(results["error_sources"][plain["name"]], plain["name"], out_dir / "error_sources.png")
    write_cause_plots(results["causes"], out_dir)
    calibrations = results["calibration"]
    if calibrations["epoch0"] is not None:
        curves = [("pre-trained", calibrations["epoch0"])]
        curves += [
            (c["name"], calibrations["last"][c["name"]]) for c in (plain, _full(conditions, config, "abstention")) if c
        ]
        plot_reliability(curves, out_dir / "reliability.png")


def _probe_table(agreement: dict[str, dict[str, int]]) -> list[str]:
    lines = ["| designed | highly known | maybe known | weakly known | unknown |", "|---|---|---|---|---|"]
    for designed, counts in agreement.items():
        total = sum(counts.values()) or 1
        lines.append(f"| {designed} | " + " | ".join(f"{counts[c] / total:.2f}" for c in counts) + " |")
    return lines


def _conditions_table(conditions: list[dict], intervals: dict) -> list[str]:
    lines = [
        "| condition | seeds | epoch | fitted known / unknown | known accuracy | highly known accuracy | "
        "known hallucination | unknown hallucination | unknown abstention |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    epoch0 = intervals["epoch0"]
    if epoch0:
        lines.append(
            "| pre-trained (epoch 0) | - | 0 | - | "
            + " | ".join(with_interval(epoch0[key]) for key, *_ in REPORTED_RATES)
            + " |"
        )
    for c in conditions:
        r, rates = c["per_epoch"][-1], intervals["conditions"][c["name"]]
        fitted = " / ".join(
            "n/a" if r[k] is None else f"{r[k]:.2f}"
            for k in ("finetune_known_exact_match", "finetune_unknown_exact_match")
        )
        epoch = ", ".join(map(str, c["selected_epochs"].values())) if c.get("selected_epochs") else r["epoch"]
        lines.append(
            f"| {c['name']} | {len(c.get('training_seeds') or c['runs'])} | {epoch} | {fitted} | "
            + " | ".join(with_interval(rates[key]) for key, *_ in REPORTED_RATES)
            + " |"
        )
    return lines


def _comparisons_table(comparisons: list[dict]) -> list[str]:
    lines = ["| comparison | a | b | test people | a minus b [95%] |", "|---|---|---|---|---|"]
    for c in comparisons:
        figure = f"{c['group']}: {c['statistic'].replace('_', ' ')}"
        lines.append(f"| {c['question']} | {c['a']} | {c['b']} | {figure} | {signed(c)} |")
    return lines


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _sources_row(label: str, entry: dict) -> str:
    shares, chance = entry["shares"], entry["chance"]
    cells = [f"{_share(shares[s])} ({_share(chance[s])})" for s in ("hedged_default", "borrowed")]
    cells += [_share(shares[s]) for s in ("other_person", "none")]
    return f"| {label} | {entry['hallucinated']} | " + " | ".join(cells) + " |"


def _sources_tables(error_sources: dict, plain: dict | None) -> list[str]:
    """Sources of the hallucinated test answers per condition at epochs 0, 1 and last; by exposure for `plain`."""
    header = "| hallucinated | hedged default (chance) | borrowed (chance) | another person's | none |"
    lines = ["| condition, epoch " + header, "|---|---|---|---|---|---|"]
    for name, epochs in error_sources.items():
        for entry in [e for e in epochs if e["epoch"] <= 1] + epochs[-1:]:
            lines.append(_sources_row(f"{name}, {entry['epoch']}", entry))
    if plain and plain["name"] in error_sources:
        last = error_sources[plain["name"]][-1]
        lines += ["", f"By exposure (biographies read in pre-training), {plain['name']} at epoch {last['epoch']}:", ""]
        lines += ["| exposure " + header, "|---|---|---|---|---|---|"]
        lines += [_sources_row(exposure, entry) for exposure, entry in last["by_exposure"].items()]
    return lines


def _calibration_table(calibration: dict) -> list[str]:
    lines = ["| model | answered per seed | ECE (mean over seeds) | ECE by seed |", "|---|---|---|---|"]
    rows = [("pre-trained (epoch 0)", calibration["epoch0"]), *calibration["last"].items()]
    for label, curve in rows:
        if curve is not None:
            ece = "n/a" if curve["ece"] is None else f"{curve['ece']:.3f}"
            by_seed = ", ".join(f"{value:.3f}" for value in curve["ece_by_seed"])
            lines.append(f"| {label} | {curve['answered']:.0f} | {ece} | {by_seed} |")
    return lines


def finding_lines(findings: list[dict]) -> list[str]:
    """One paragraph per finding of results.json's `findings`: the claim, our difference and the verdict."""
    lines = []
    for f in findings:
        c = f["comparison"]
        lines.append(
            f"{f['number']}. {f['claim']} (theirs). Ours, {c['question']}: {c['a']} minus {c['b']}, "
            f"{c['statistic'].replace('_', ' ')}, {signed(c)} over {c['people']} people and {c['seeds']} training "
            f"seeds: **{f['verdict']}**. Rule: {f['rule']}."
        )
    return lines


def write_report(results: dict, out_dir: Path) -> Path:
    """Write the plots and `report.md` for `results` (the content of results.json) into `out_dir`."""
    config = results["config"]
    skipped = [c["name"] for c in results["conditions"] if c.get("skipped")]
    conditions = [c for c in results["conditions"] if not c.get("skipped")]
    write_plots(conditions, results, out_dir)
    plain = _full(conditions, config, "none")
    lines = ["# Fine-tuning hallucination study", ""]
    lines += ["Settings (`results.json` has them all): " + ", ".join(f"`{k}`={config[k]}" for k in sorted(config)), ""]
    lines += ["Where the time went (seconds): " + ", ".join(f"{k} {v:.0f}" for k, v in time_breakdown(results))]
    if results.get("reused"):
        lines += [
            f"(This run reused {', '.join(results['reused'])} from an earlier one: a reused stage counts 0 s here, a "
            "reused fine-tuning run the seconds it took then.)"
        ]
    lines += ["", "## What pre-training taught (probe, per designed category)", ""]
    lines += _probe_table(results["probe"]["agreement"])
    records = results["records"]
    lines += [
        "",
        f"Every answer scored is in `{records['file']}` ({records['rows']:,} rows, {_size(records['bytes'])}); every "
        "figure below is computed from it, the detectors' from their scores of the same answers (below).",
    ]
    lines += ["", "## Every condition at its last epoch, on the test people", ""]
    lines += [
        f"Means over the training seeds, with 95% intervals ({results['intervals']['method']}). Early stopping "
        "shows each seed's selected epoch.",
        "",
    ]
    lines += _conditions_table(conditions, results["intervals"])
    if skipped:
        lines += ["", f"Skipped, with no fine-tune example left after filtering: {', '.join(skipped)}."]
    lines += ["", "## The model's own signals as a hallucination detector (test people, last epoch)", ""]
    lines += detection_lines(results, conditions, plain)
    lines += ["", "## The findings of Gekhman et al. (2024), checked one by one", ""]
    lines += [
        "Each verdict follows the 95% interval of the difference that tests it: *reproduced* when it excludes 0 in "
        "the published direction, *not reproduced* when it lies wholly below the smallest effect that still counts "
        "as the published one (0, or half the published effect: each rule says which), *inconclusive* otherwise.",
        "",
    ]
    lines += finding_lines(results["findings"])
    lines += ["", "## Every other comparison (paired differences on the same test people and seeds)", ""]
    lines += _comparisons_table(results["comparisons"])
    lines += ["", "## Where the wrong answers come from (hallucinated test answers, seeds pooled)", ""]
    lines += [
        "Each hallucinated answer is the fine-tune set's most frequent value of the attribute (hedged default), "
        "another value it taught (borrowed), another person's value it did not teach, or none of these; in brackets, "
        "the share a wrong value drawn at random from the world's other people would have (`error_sources.py`). "
        "The epoch-0 rows hold the pre-trained model's one set of answers once per seed, each classified against "
        "that seed's fine-tune set. No interval is computed for these shares.",
        "",
    ]
    lines += _sources_tables(results["error_sources"], plain)
    lines += ["", *cause_lines(results)]
    lines += ["", "## Calibration of the confidence (test people, answered questions, ECE per training seed)", ""]
    lines += _calibration_table(results["calibration"])
    lines += [""]
    lines += [
        f"![{name}]({name}.png)\n"
        for name in (
            "headline",
            "fitting",
            "figure_3b",
            "sizes",
            "mitigations",
            "detectors",
            "risk_coverage",
            "error_sources",
            "reliability",
            "dose_response",
        )
        if (out_dir / f"{name}.png").is_file()
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


__all__ = [
    "SEED_FIGURES",
    "finding_lines",
    "with_interval",
    "time_breakdown",
    "write_plots",
    "write_report",
    "write_seed_summary",
]
