"""The report's section on the model's own signals as a hallucination detector: every detector's AUROC with its
interval, its difference from the confidence's with the paired interval, the layers the probes chose, selective
answering, and two plots (`detectors.png`, `risk_coverage.png`)."""

from pathlib import Path

import matplotlib.pyplot as plt

from .detectors import DETECTORS
from .render import error_bars, save_figure, signed, with_interval

LABELS = {
    "confidence": "confidence",
    "question_probe": "probe, question's last token",
    "answer_probe": "probe, answer's first token",
    "semantic_entropy": "semantic entropy (sampled)",
    "entropy_probe": "semantic-entropy probe",
}
PROBES = ("question_probe", "answer_probe", "entropy_probe")


def plot_detectors(name: str, evidence: dict, path: Path) -> None:
    """Each detector's AUROC on one condition's test people (left) and its difference from the confidence's (right),
    with 95% intervals (`evidence`: `evidence.auroc_intervals`' result)."""
    shown = [d for d in DETECTORS if evidence.get(d)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.6 * len(shown) + 1.6), sharey=True)
    for y, detector in enumerate(shown):
        for ax, cell in ((left, evidence[detector]), (right, evidence[detector].get("minus_baseline"))):
            if cell and cell["low"] is not None:
                estimates, errors = error_bars([cell])
                ax.errorbar(estimates, [y], xerr=errors, fmt="o", capsize=3)
    left.axvline(0.5, color="grey", ls=":", label="chance")
    right.axvline(0.0, color="grey", ls=":")
    left.set_yticks(range(len(shown)), [LABELS[d] for d in shown])
    left.set_xlabel("AUROC (right answers above hallucinated ones)")
    right.set_xlabel("AUROC minus the confidence's (paired)")
    left.set_title(f"Hallucination detectors, {name}")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x")
    left.invert_yaxis()
    save_figure(fig, path)


def plot_risk_coverage(condition: dict, path: Path) -> None:
    """Accuracy on the answered test questions against the share answered, one curve per detector, of a condition's
    first trained run, with the confidence threshold chosen on dev."""
    detector = condition["detector"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, points in detector["risk_coverage"].items():
        auc = detector["auroc"][name]
        label = LABELS[name] + ("" if auc is None else f" (AUROC {auc:.2f})")
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
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_detection_plots(results: dict, plain: dict | None, out_dir: Path) -> None:
    """The plain run's detector plots, when it was run."""
    evidence = results["detectors"]["conditions"].get(plain["name"]) if plain else None
    if evidence:
        plot_detectors(plain["name"], evidence, out_dir / "detectors.png")
    if plain and plain.get("detector"):
        plot_risk_coverage(plain, out_dir / "risk_coverage.png")


def _layers(condition: dict) -> str:
    """The layer each probe chose in each run (1: the first after the embeddings)."""
    parts = []
    for probe in PROBES:
        chosen = []
        for run in condition["runs"]:
            fit = ((run.get("detector") or {}).get("fits") or {}).get(probe) or {}
            chosen.append(str(fit["layer"] + 1) if "layer" in fit else "none")
        parts.append(f"{LABELS[probe]} {', '.join(chosen)}")
    return "; ".join(parts)


def detection_lines(results: dict, conditions: list[dict], plain: dict | None) -> list[str]:
    """The report's detector section."""
    evidence = results["detectors"]
    lines = [
        "Known and unknown test people pooled, the answers each run gave at its last epoch (abstentions left out). "
        "AUROC 0.5 is chance, 1.0 a perfect split of right from wrong answers. Every score is in "
        f"`{results['detector_scores']['file']}`. The probes are logistic regressions fitted on the dev people, each "
        "at the layer whose out-of-fold AUROC on the dev people was highest (5 folds grouped by person); the "
        f"semantic-entropy probe predicts high semantic entropy, not correctness. Intervals: {evidence['method']}.",
        "",
        "| condition | " + " | ".join(LABELS[d] for d in DETECTORS) + " |",
        "|---|" + "---|" * len(DETECTORS),
    ]
    named = {c["name"]: c for c in conditions}
    shown = [name for name in evidence["conditions"] if name in named]
    for name in shown:
        cells = evidence["conditions"][name]
        lines.append(f"| {name} | " + " | ".join(with_interval(cells[d]) for d in DETECTORS) + " |")
    others = [d for d in DETECTORS if d != evidence["baseline"]]
    lines += ["", f"Each detector's AUROC minus the {evidence['baseline']}'s, paired on the same answers:", ""]
    lines += ["| condition | " + " | ".join(LABELS[d] for d in others) + " |", "|---|" + "---|" * len(others)]
    for name in shown:
        cells = evidence["conditions"][name]
        lines.append(
            f"| {name} | "
            + " | ".join(signed(cells[d]["minus_baseline"]) if cells[d] else "n/a" for d in others)
            + " |"
        )
    if plain and plain["name"] in named:
        lines += ["", f"Layers the probes chose on {plain['name']}, by training seed: {_layers(plain)}."]
    if plain and plain.get("detector"):
        lines += ["", _selective_line(plain)]
    return lines


def _selective_line(plain: dict) -> str:
    """Selective answering on the plain run's first trained seed, against answering everything."""
    detector = plain["detector"]
    chosen, everything = detector["selective"], detector["answer_all"]
    seed = next(run["training_seed"] for run in plain["runs"] if not run.get("skipped"))
    overall = "n/a" if everything["accuracy_answered"] is None else f"{everything['accuracy_answered']:.2f}"
    answer_all = (
        f"answering everything gives accuracy {overall} on the "
        f"{everything['coverage']:.0%} answered, hallucinating on {everything['hallucination_rate']:.0%} of all test "
        "questions"
    )
    where = f"Selective answering on {plain['name']} (training seed {seed}), with the threshold chosen on dev: "
    if detector["threshold"] is None:
        return where + f"no confidence threshold gains anything on dev, so it answers nothing; {answer_all}."
    shown = "n/a" if chosen["accuracy_answered"] is None else f"{chosen['accuracy_answered']:.2f}"
    return (
        where + f"answering only when the confidence is at least {detector['threshold']:.3g} gives accuracy {shown} "
        f"on the {chosen['coverage']:.0%} answered, hallucinating on {chosen['hallucination_rate']:.0%} of all test "
        f"questions; {answer_all}."
    )


__all__ = ["LABELS", "detection_lines", "plot_detectors", "plot_risk_coverage", "write_detection_plots"]
