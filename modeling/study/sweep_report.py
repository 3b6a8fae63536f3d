"""The regime sweep's `sweep.md` and `sweep.png` (`sweep.py` computes every figure; this only renders them)."""

from pathlib import Path

import matplotlib.pyplot as plt

from .render import error_bars, rate_axis, save_figure, signed, with_interval

CURVES = (  # (per-epoch key, label, line style)
    ("test_known_accuracy", "test known accuracy", "-"),
    ("dev_known_accuracy", "dev known accuracy", "--"),
    ("finetune_known_exact_match", "known fine-tune examples fitted", ":"),
    ("finetune_unknown_exact_match", "unknown fine-tune examples fitted", "-."),
)


def plot_sweep(regimes: list[dict], path: Path) -> None:
    """One panel per regime (rows: method and batch size; columns: learning rate): the mean curves over the
    training seeds against the epoch (symmetric log scale, epoch 0 the pre-trained model), each run's early-stopping
    epoch a grey line."""
    rows = list(dict.fromkeys((r["method"], r["batch_size"]) for r in regimes))
    rates = {row: [r for r in regimes if (r["method"], r["batch_size"]) == row] for row in rows}
    columns = max(len(panels) for panels in rates.values())
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.2 * columns, 2.6 * len(rows)), squeeze=False)
    for row_axes, row in zip(axes, rows, strict=True):
        for ax in row_axes[len(rates[row]) :]:
            ax.axis("off")
        for ax, regime in zip(row_axes, rates[row], strict=False):
            epochs = [record["epoch"] for record in regime["per_epoch"]]
            for key, label, style in CURVES:
                values = [record[key] for record in regime["per_epoch"]]
                if all(value is not None for value in values):
                    ax.plot(epochs, values, style, label=label)
            for run in regime["runs"]:
                ax.axvline(run["early_stop_epoch"], color="grey", alpha=0.5, linewidth=1)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(left=0)
            ax.set_title(regime["regime"], fontsize=9)
            rate_axis(ax)
    axes[0][0].legend(fontsize=6, loc="lower right")
    fig.supxlabel("fine-tuning epoch (grey: each run's early-stopping epoch)")
    save_figure(fig, path)


def _epochs(runs: list[dict], read) -> str:
    return ", ".join("-" if read(run) is None else str(read(run)) for run in runs)


def regime_row(regime: dict) -> str:
    """One row of the sweep table."""
    runs, test = regime["runs"], regime["test_known_accuracy"]
    seconds = sum(run["seconds"] for run in runs) / len(runs)
    shares = [run["early_stop"]["finetune_unknown_exact_match"] for run in runs]
    unknown_at_stop = "n/a" if None in shares else f"{sum(shares) / len(shares):.2f}"  # no unknown example
    cells = [
        regime["regime"],
        f"{seconds:.0f}",
        _epochs(runs, lambda run: run["fitted_epoch"]["known"]),
        _epochs(runs, lambda run: run["fitted_epoch"]["unknown"]),
        _epochs(runs, lambda run: run["early_stop_epoch"]),
        unknown_at_stop,
        f"{regime['dev_early_stop_accuracy']:.2f}",
        with_interval(test["early_stop"]),
        with_interval(test["convergence"]),
        signed(test["late_harm"]),
        test["late_harm_verdict"] or "n/a: not fitted at the end",
    ]
    return "| " + " | ".join(cells) + " |"


def plot_mitigation_settings(settings: list[dict], plain: dict, path: Path) -> None:
    """One panel per setting: the dev known accuracy at the last epoch against the value (log scale), with 95%
    intervals; the plain run's (`plain`, a rate of `evidence.rate_interval`) as a dashed line with its band."""
    names = list(dict.fromkeys(summary["setting"] for summary in settings))
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 2.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        tried = [summary for summary in settings if summary["setting"] == name]
        estimates, yerr = error_bars([summary["dev_known_accuracy_interval"] for summary in tried])
        ax.errorbar([summary["value"] for summary in tried], estimates, yerr=yerr, fmt="o-", capsize=3)
        ax.axhline(plain["estimate"], color="grey", linestyle="--", label="plain run")
        ax.axhspan(plain["low"], plain["high"], color="grey", alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel(f"{name} ({tried[0]['mitigation']})")
        rate_axis(ax)
    axes[0][0].set_ylabel("dev known accuracy, last epoch")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, path)


def full_pick(sweep: dict) -> dict:
    """The summary of the regime picked for full fine-tuning, where the mitigations' settings are tried."""
    return next(regime for regime in sweep["regimes"] if regime["regime"] == sweep["picks"]["full"]["regime"])


def mitigation_settings_section(sweep: dict) -> list[str]:
    """The lines of `sweep.md` on the trained mitigations' settings (`sweep["mitigation_settings"]`, not empty)."""
    settings, full = sweep["mitigation_settings"], full_pick(sweep)
    plain = full["dev_known_accuracy"]["convergence"]
    rows = [f"| plain run (no mitigation) | | {with_interval(plain)} | | | |"]
    for summary in settings:
        known, unknown = (summary[f"finetune_{group}_exact_match"] for group in ("known", "unknown"))
        cells = [
            summary["mitigation"],
            f"{summary['setting']} {summary['value']:g}",
            with_interval(summary["dev_known_accuracy_interval"]),
            "n/a" if known is None else f"{known:.2f}",
            "n/a" if unknown is None else f"{unknown:.2f}",
            f"{summary['seconds']:.0f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    picks = [f"- {setting}: {pick['value']:g}" + (f" (tied: {pick['tied']})" if pick["tied"] else "")
             for setting, pick in sweep["setting_picks"].items()]  # fmt: skip
    return [
        "",
        "## The trained mitigations' settings",
        "",
        f"Each value fine-tunes its mitigation in {full['regime']} (full fine-tuning's pick) for the same budget, "
        "under the same training seeds; `mitigations/<setting>_<value>/` holds its runs and records. Figures at the "
        "last epoch, means over the seeds; the interval is over dev people and seeds.",
        "",
        "![mitigation settings](mitigation_settings.png)",
        "",
        "| mitigation | setting | dev known accuracy | known examples answered exactly | unknown examples answered "
        "exactly | seconds per run |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Rule (`SETTING_RULE`): {sweep['setting_rule']}.",
        "",
        *picks,
    ]


def write_sweep_report(sweep: dict, out_dir: Path) -> Path:
    """`out_dir/sweep.md`, `out_dir/sweep.png` and `out_dir/mitigation_settings.png` (if it tried any) from `sweep`
    (what `run_sweep` writes as sweep.json)."""
    config, regimes = sweep["config"], sweep["regimes"]
    plot_sweep(regimes, out_dir / "sweep.png")
    lines = [
        "# Fine-tuning regime sweep",
        "",
        f"Each regime fine-tunes the plain full or LoRA condition at {config['fraction_unknown']:.0%} unknown on "
        f"{config['finetune_size']} questions for {config['eval_epochs'][-1]} epochs, evaluated after epochs "
        f"{config['eval_epochs']}, under training seeds {config['training_seeds']}; `sweep.json` has every figure "
        "and `regimes/<regime>/` each regime's config, runs and records.",
        "",
        f"Fitted: {sweep['fitted_share']:.0%} of the kind answered exactly (first evaluated epoch, per seed; - never). "
        "A regime not fitted at its last epoch has no verdict: its harm is no late harm of a fitted model. "
        "Early stop: the epoch with the best dev known accuracy (per seed). Convergence: the last epoch. Late harm: "
        "test known accuracy at early stop minus at convergence, paired over people and seeds with a 95% bootstrap "
        "interval; its verdict as the study's finding 2 (reproduced if the interval lies above 0, not reproduced if "
        "below the smallest effect that would count, "
        f"{sweep['late_harm_bar']:.2f}).",
        "",
        "![sweep](sweep.png)",
        "",
        "| regime | seconds per run | known fitted by | unknown fitted by | early stop | unknown fitted at early "
        "stop | dev known accuracy at early stop | test known accuracy at early stop | at convergence | late harm "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(regime_row(regime) for regime in regimes),
        "",
        "## The picks",
        "",
        f"Rule (`CHOICE_RULE`): {sweep['choice_rule']}.",
        "",
    ]
    for method, pick in sweep["picks"].items():
        relaxed = f" (no regime met the rule; relaxed: {pick['relaxed']})" if pick["relaxed"] else ""
        tied = f"; tied on dev with {', '.join(pick['tied'])}, passed over by the tie-break" if pick["tied"] else ""
        lines.append(f"- {method}: {pick['regime']}{relaxed}{tied}")
    if sweep.get("mitigation_settings"):  # a sweep that tried them (older sweep.json files have no such key)
        plain = full_pick(sweep)["dev_known_accuracy"]["convergence"]
        plot_mitigation_settings(sweep["mitigation_settings"], plain, out_dir / "mitigation_settings.png")
        lines += mitigation_settings_section(sweep)
    path = out_dir / "sweep.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


__all__ = [
    "full_pick",
    "mitigation_settings_section",
    "plot_mitigation_settings",
    "plot_sweep",
    "regime_row",
    "write_sweep_report",
]
