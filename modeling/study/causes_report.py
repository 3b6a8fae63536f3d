"""The report's sections on the two causes the study is about, overfitting and thin data (`causes.py` computes every
figure; this only renders them): one sentence per cause, Gekhman et al.'s Figure 3b, thin fine-tune data at equal
epochs and equal steps, thin pre-training as a dose-response, loss or blocked gain, and the linear model."""

from pathlib import Path

import matplotlib.pyplot as plt

from .causes import DOSE_RATES, THIN_POINTS, THIN_RATES
from .evidence import verdict
from .render import error_bars, rate_axis, save_figure, signed, with_interval

SHOWN = {"reproduced": "shown", "not reproduced": "not shown", "inconclusive": "inconclusive"}


def overfitting_sentence(findings: list[dict], figure: list[dict], late_change: list[dict]) -> str:
    """Whether the lab shows overfitting as a cause: finding 2's verdict (early stop against convergence), with
    Figure 3b's gap at the largest share at both points and the part of the late harm that goes with the unknown
    examples there (`causes.late_change`)."""
    late = next((f for f in findings if f["number"] == 2), None)
    if late is None:
        return "Overfitting: not tested (no plain run with early stopping)."
    c = late["comparison"]
    sentence = (
        f"Overfitting (training on past the best dev epoch): **{SHOWN[late['verdict']]}**: test known accuracy at "
        f"early stop minus at convergence is {signed(c)} ({c['a']} against {c['b']}; rule: {late['rule']})"
    )
    if figure:
        share = max(entry["fraction_unknown"] for entry in figure)
        gaps = {e["point"]: signed(e["difference"]) for e in figure if e["fraction_unknown"] == share}
        sentence += (
            f"; at {share:.0%} unknown, D minus D without its unknown examples is {gaps.get('early_stop', 'n/a')} at "
            f"early stop and {gaps.get('convergence', 'n/a')} at convergence"
        )
        added = next((e for e in late_change if e["fraction_unknown"] == share), None)
        if added is not None:
            sentence += (
                f", and at that share the part of the late harm that goes with the unknown examples (D's early stop "
                f"minus convergence, less that of D without them) is {signed(added['late_harm_difference'])}"
            )
    return sentence + "."


def thin_sentence(thin: list[dict]) -> str:
    """Whether the lab shows thin fine-tune data as a cause: the smallest set against the reference (the largest, the
    share grid's size) at equal optimizer steps, on the known test people's hallucination rate (shown if its
    interval lies above 0, not shown if below)."""
    if not thin:
        return "Thin fine-tune data: not tested (fewer than two sizes)."
    smallest, largest = min(e["finetune_size"] for e in thin), max(e["finetune_size"] for e in thin)
    at = {e["point"]: e for e in thin if e["finetune_size"] == smallest}
    key = "known_hallucination_rate_difference"
    difference = at["equal_steps"][key]
    return (
        f"Thin fine-tune data: **{SHOWN[verdict(difference, +1)]}**: with {smallest} questions instead of the "
        f"{largest} of the reference, trained for as many optimizer steps, the known test people's hallucination "
        f"rate differs by {signed(difference)} (at equal epochs {signed(at['equal_epochs'][key])}, at early stop "
        f"{signed(at['early_stop'][key])}; shown if the equal-steps interval lies above 0, not shown if below)."
    )


def _figure_3b_table(figure: list[dict]) -> list[str]:
    lines = [
        "| unknown share | point | examples, mean of seeds (D / without) | D | D without unknowns | D minus without |",
        "|---|---|---|---|---|---|",
    ]
    for e in figure:
        examples = " / ".join(f"{n:.1f}".removesuffix(".0") for n in e["examples"])  # means over seeds
        cells = [f"{e['fraction_unknown']:.0%}", e["point"].replace("_", " "), examples, with_interval(e["D"]),
                 with_interval(e["D_without_unknown"]), signed(e["difference"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return lines


LATE_CHANGE_COLUMNS = (
    ("D_late_harm", "D: early stop minus convergence"),
    ("D_without_unknown_late_harm", "without unknowns: early stop minus convergence"),
    ("late_harm_difference", "D's late loss minus without's (+: D falls further behind after early stop)"),
    ("D_early_stop_minus_pretrained", "D at early stop minus pre-trained"),
    ("D_without_unknown_early_stop_minus_pretrained", "without unknowns at early stop minus pre-trained"),
)


def _late_change_table(late: list[dict]) -> list[str]:
    lines = [
        "| unknown share | " + " | ".join(label for _, label in LATE_CHANGE_COLUMNS) + " |",
        "|---|" + "---|" * len(LATE_CHANGE_COLUMNS),
    ]
    for e in late:
        cells = [f"{e['fraction_unknown']:.0%}", *(signed(e[key]) for key, _ in LATE_CHANGE_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _thin_table(thin: list[dict]) -> list[str]:
    rates = [f"{group} {rate.replace('_', ' ')}" for group, rate in THIN_RATES]
    lines = [
        "| size | point | epochs | optimizer steps of the run | fitted known / unknown | "
        + " | ".join(f"{r} | difference" for r in rates)
        + " |",
        "|---|---|---|---|---|" + "---|---|" * len(rates),
    ]
    for e in thin:
        epochs = ", ".join(str(epoch) for epoch in e["epochs"])
        fitted = " / ".join("n/a" if v is None else f"{v:.2f}" for v in e["fitted"].values())
        cells = [str(e["finetune_size"]), e["point"].replace("_", " "), epochs, f"{e['optimizer_steps']:g}", fitted]
        for group, rate in THIN_RATES:
            cells += [with_interval(e[f"{group}_{rate}"]), signed(e[f"{group}_{rate}_difference"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _dose_table(dose: dict[str, dict[str, dict]]) -> list[str]:
    lines = ["| condition | exposure | accuracy | hallucinated | abstained |", "|---|---|---|---|---|"]
    for name, by_exposure in dose.items():
        for exposure, rates in by_exposure.items():
            cells = " | ".join(with_interval(rates[rate]) for rate in DOSE_RATES)
            lines.append(f"| {name} | {exposure} | {cells} |")
    return lines


def _loss_table(differences: list[dict]) -> list[str]:
    lines = [
        "Below the pre-trained model: fine-tuning on unknown facts lost answers it had. Below the run without "
        "unknown examples only: it blocked the gain that fine-tuning on known facts brings. Paired on the same "
        "people and seeds, overall and per exposure (biographies read in pre-training).",
        "",
        "| condition | against | exposure | difference [95%] | people |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {d['condition']} | {d['against']} | {d['exposure']} | {signed(d)} | {d['people']} |" for d in differences
    ]
    return lines


def _regression_lines(regression: dict) -> list[str]:
    ours, theirs = regression["ours"], regression["gekhman"]
    if ours is None:
        return ["Too few runs and epochs to fit it."]
    return [
        "Test accuracy (points, every test question) = intercept + beta_known x (share of the fine-tune set known to "
        "the probe and fitted) + beta_unknown x (share unknown to the probe and fitted), over every run and evaluated "
        f"epoch of {', '.join(regression['conditions'])} ({ours['points']} points; no interval computed): "
        f"beta_known {ours['beta_known']:+.1f}, beta_unknown {ours['beta_unknown']:+.1f}, R^2 {ours['r2']:.2f}; "
        f"theirs {theirs['beta_known']:+.1f}, {theirs['beta_unknown']:+.1f}, R^2 {theirs['r2']:.2f}."
    ]


def cause_lines(results: dict) -> list[str]:
    """The report's sections on the two causes, from results.json's `findings` and `causes`."""
    causes = results["causes"]
    lines = ["## The two causes: does this lab show them?", ""]
    lines += [f"- {overfitting_sentence(results['findings'], causes['figure_3b'], causes['late_change'])}"]
    lines += [f"- {thin_sentence(causes['thin_data'])}", ""]
    lines += ["## Overfitting: Gekhman et al.'s Figure 3b (test known accuracy, D against D without unknowns)", ""]
    lines += [
        "D: the plain full fine-tuning at each share; without unknowns: the same draw less the questions the probe "
        "found unknown (a smaller set, trained for as many epochs). Early stop: each run's best dev epoch; "
        "convergence: its last. Their reading: equal at early stop, D below at convergence by a gap that grows with "
        "the share. Differences paired over people and seeds.",
        "",
    ]
    lines += _figure_3b_table(causes["figure_3b"]) if causes["figure_3b"] else ["Not run (no filtered_fractions)."]
    if causes["late_change"]:
        lines += [
            "",
            "The two points against each other, and against the pre-trained model (epoch 0), test known accuracy, "
            "each on the same draws of people and seeds:",
            "",
            *_late_change_table(causes["late_change"]),
        ]
    lines += ["", "## Thin fine-tune data, separated from short training", ""]
    lines += [
        "Each size at the same share, trained for as many optimizer steps as the reference (the share grid's set, the "
        "largest; more epochs), is read at equal epochs (the reference's last), at equal steps (its own last) and at "
        "early stop (its best dev epoch); each difference is against the reference at the same point, paired over "
        "people and seeds.",
        "",
    ]
    lines += _thin_table(causes["thin_data"]) if causes["thin_data"] else ["Not run (fewer than two sizes)."]
    lines += ["", "## Thin pre-training: the test people by exposure, at the last epoch", ""]
    lines += _dose_table(causes["dose_response"])
    lines += ["", "## Loss or blocked gain? Test known accuracy against the pre-trained model and the 0% run", ""]
    lines += _loss_table(causes["loss_or_blocked_gain"])
    lines += ["", "## Gekhman et al.'s linear model of fitting and accuracy", ""]
    lines += _regression_lines(causes["fitting_regression"])
    return lines


def plot_figure_3b(figure: list[dict], path: Path) -> None:
    """Test known accuracy against the share of unknown examples: D and D without unknowns (dashed), at early stop
    and at convergence, with 95% intervals."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for point, colour in (("early_stop", "tab:blue"), ("convergence", "tab:red")):
        entries = [e for e in figure if e["point"] == point]
        shares = [e["fraction_unknown"] for e in entries]
        for key, style, label in (("D", "o-", "D"), ("D_without_unknown", "s--", "D without unknowns")):
            estimates, errors = error_bars([e[key] for e in entries])
            ax.errorbar(shares, estimates, yerr=errors, fmt=style, color=colour, capsize=3,
                        label=f"{label}, {point.replace('_', ' ')}")  # fmt: skip
    ax.set_xlabel("share of unknown examples in D")
    ax.set_ylabel("test known accuracy")
    ax.set_title("Figure 3b at our scale")
    rate_axis(ax)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_thin(thin: list[dict], path: Path) -> None:
    """Known accuracy and hallucination on the test people against the fine-tune set size, at equal epochs, equal
    steps and early stop, with 95% intervals."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, rate in zip(axes, ("known_accuracy", "known_hallucination_rate"), strict=True):
        for point in THIN_POINTS:
            entries = [e for e in thin if e["point"] == point]
            estimates, errors = error_bars([e[rate] for e in entries])
            sizes = [e["finetune_size"] for e in entries]
            ax.errorbar(sizes, estimates, yerr=errors, fmt="o-", capsize=3, label=point.replace("_", " "))
        ax.set_xscale("log")
        ax.set_xlabel("fine-tune set size (questions)")
        ax.set_title(f"test people: {rate.replace('_', ' ')}")
        rate_axis(ax)
    axes[0].legend(fontsize=8)
    fig.suptitle("Thin fine-tune data: each size at equal epochs, equal optimizer steps and early stop")
    save_figure(fig, path)


def plot_dose_response(dose: dict[str, dict[str, dict]], path: Path) -> None:
    """Accuracy, hallucination and abstention on the test people against their exposure in pre-training, one line
    per condition, with the recorded 95% intervals as error bars."""
    fig, axes = plt.subplots(1, len(DOSE_RATES), figsize=(13, 4.2), sharey=True)
    for name, by_exposure in dose.items():
        exposures = list(by_exposure)
        for ax, rate in zip(axes, DOSE_RATES, strict=True):
            estimates, errors = error_bars([by_exposure[e][rate] for e in exposures])
            ax.errorbar(range(len(exposures)), estimates, yerr=errors, fmt="o-", capsize=3, label=name)
            ax.set_xticks(range(len(exposures)), exposures)
    for ax, rate in zip(axes, DOSE_RATES, strict=True):
        ax.set_title(f"test people: {rate.replace('_', ' ')}")
        ax.set_xlabel("biographies of the person read in pre-training")
        rate_axis(ax)
    axes[0].legend(fontsize=8)
    fig.suptitle("Thin pre-training: what fine-tuned models answer, by how much pre-training read of the person")
    save_figure(fig, path)


def write_cause_plots(causes: dict, out_dir: Path) -> list[str]:
    """The causes' plots that have data, into `out_dir`; returns their names (without .png)."""
    plots = (  # (file name, key of `causes`, plot)
        ("figure_3b", "figure_3b", plot_figure_3b),
        ("sizes", "thin_data", plot_thin),
        ("dose_response", "dose_response", plot_dose_response),
    )
    written = []
    for name, key, plot in plots:
        if causes[key]:
            plot(causes[key], out_dir / f"{name}.png")
            written.append(name)
    return written


__all__ = ["cause_lines", "overfitting_sentence", "thin_sentence", "write_cause_plots"]
