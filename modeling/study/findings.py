"""The study's evidence from its records: every reported rate with its interval, the paired interval of every
difference the report draws, and the verdict on each finding of Gekhman et al. (2024), "Does Fine-Tuning LLMs on
New Knowledge Encourage Hallucinations?" (see `evidence.py` for the method).

Everything here is computed from the per-answer records alone (and, for where the wrong answers come from, the world
whose values they could have come from), so `results.json` carries it and the report only renders it.
"""

import pandas as pd

from .calibration import calibration_by_seed
from .config import Condition, StudyArguments, by_condition
from .error_sources import sources_by_epoch
from .evidence import RESAMPLES, difference_interval, rate_interval, verdict

# The rates of every condition the report shows: (key, split, group, designed knowledge or None, statistic).
REPORTED_RATES = (
    ("test_known_accuracy", "test", "known", None, "accuracy"),
    ("test_highly_known_accuracy", "test", "known", "highly_known", "accuracy"),
    ("test_known_hallucination_rate", "test", "known", None, "hallucination_rate"),
    ("test_unknown_hallucination_rate", "test", "unknown", None, "hallucination_rate"),
    ("test_unknown_abstention_rate", "test", "unknown", None, "abstention_rate"),
)
# The smallest late harm that would still count as Gekhman et al.'s: half of their 14 points between early stopping
# and convergence. Their abstention result: 61.8% against 38.8% on the answered questions; half of its 23 points.
LATE_HARM = 0.07
ABSTENTION_GAIN = 0.115
# A harm this small still counts as "no loss" for the filtering finding (ours: their paper gives no margin).
NO_LOSS_MARGIN = 0.05
# Dev accuracies closer than this are one value when a setting is picked on them (the sweep's picks): float sums of
# the same counts in another order differ in the last bit.
TIE = 1e-9
METHOD = (
    f"percentile bootstrap over people and training seeds, {RESAMPLES} resamples: people (with all their "
    "questions) and seeds drawn with replacement, the same draws for both sides of a difference; intervals of 0 "
    "width mean every person under every seed gave the same verdict"
)


def runs_at(records: pd.DataFrame, condition: dict, epoch: int | str = "last") -> pd.DataFrame:
    """The records of `condition` (a results.json condition) at one epoch of each of its runs: `epoch` (an int, or
    "last": each run's last), or for early stopping each run's selected epoch."""
    rows = records[records["condition"] == condition.get("records_of", condition["name"])]
    if condition.get("selected_epochs"):
        chosen = {int(seed): epoch for seed, epoch in condition["selected_epochs"].items()}
    elif epoch == "last":
        chosen = rows.groupby("training_seed")["epoch"].max().to_dict()
    else:
        chosen = dict.fromkeys(rows["training_seed"].unique(), epoch)
    return rows[rows["epoch"] == rows["training_seed"].map(chosen)]


def first_seed(rows: pd.DataFrame) -> pd.DataFrame:
    """The records of the first training seed among `rows`."""
    return rows[rows["training_seed"] == rows["training_seed"].min()]


def asked(rows: pd.DataFrame, split: str, group: str | None = None, knowledge: str | None = None) -> pd.DataFrame:
    """The records of one split, optionally of one group and designed knowledge category."""
    keep = rows["split"] == split
    if group is not None:
        keep &= rows["group"] == group
    if knowledge is not None:
        keep &= rows["knowledge"] == knowledge
    return rows[keep]


def condition_rates(records: pd.DataFrame, condition: dict, epoch: int | str = "last") -> dict:
    """Each of `REPORTED_RATES` of `condition` at `epoch`, with its interval (`evidence.rate_interval`)."""
    rows = runs_at(records, condition, epoch)
    return {
        key: rate_interval(asked(rows, split, group, knowledge), statistic)
        for key, split, group, knowledge, statistic in REPORTED_RATES
    }


def compare(
    question: str, a: tuple[str, pd.DataFrame], b: tuple[str, pd.DataFrame], statistic: str, disjoint: bool = False
) -> dict:
    """One comparison: `a`'s statistic minus `b`'s ((label, records) each), with its interval (paired, or with
    `disjoint` of two groups of people; see `evidence.difference_interval`)."""
    return {
        "question": question,
        "a": a[0],
        "b": b[0],
        "statistic": statistic,
        **difference_interval(a[1], b[1], statistic, disjoint=disjoint),
    }


def unfitted_at_start(records: pd.DataFrame, condition: dict) -> dict[str, pd.DataFrame]:
    """The fine-tune records of `condition` after epoch 0 of the examples its runs did not fit at epoch 0 (what
    pre-training already taught is no fitting), by group: known, unknown."""
    rows = asked(records[records["condition"] == condition["name"]], "finetune")
    keys = pd.MultiIndex.from_frame(rows[["training_seed", "prompt"]])
    start = rows["epoch"] == 0
    unfitted = keys[start & ~rows["exact_match"]]
    later = rows[(rows["epoch"] >= 1) & keys.isin(unfitted)]
    return {group: later[later["group"] == group] for group in ("known", "unknown")}


def comparisons(records: pd.DataFrame, conditions: list[dict], args: StudyArguments) -> list[dict]:
    """Every comparison the report draws besides the findings: each plain full condition fine-tuned against the
    pre-trained model (its epoch 0), LoRA against full fine-tuning at each share, and each mitigation against the
    plain run at its share, on the test people's known accuracy and unknown hallucination rate."""
    found = by_condition(conditions)
    pairs = [("fine-tuned against pre-trained", c, c, 0) for c in conditions if c["mitigation"] == "none"]
    for fraction in args.unknown_fractions:
        full, lora = (found.get(Condition(fraction, m, "none", args.finetune_size)) for m in ("full", "lora"))
        if lora and full:
            pairs.append(("LoRA against full fine-tuning", lora, full, "last"))
    plain = found.get(args.plain())
    pairs += [
        ("mitigation against the plain run", c, plain, "last")
        for c in conditions
        if plain and c["mitigation"] != "none" and Condition.of(c) == args.plain(c["mitigation"])
    ]  # a set without unknowns at another share (Figure 3b) is no mitigation of this run
    out = []
    for question, a, b, b_epoch in pairs:
        a_rows, b_rows = runs_at(records, a), runs_at(records, b, b_epoch)
        b_label = f"{b['name']} epoch {b_epoch}" if b_epoch != "last" else b["name"]
        for group, statistic in (("known", "accuracy"), ("unknown", "hallucination_rate")):
            out.append(
                {
                    **compare(
                        question,
                        (a["name"], asked(a_rows, "test", group)),
                        (b_label, asked(b_rows, "test", group)),
                        statistic,
                    ),
                    "group": group,
                }
            )
    return out


def findings(records: pd.DataFrame, conditions: list[dict], args: StudyArguments) -> list[dict]:
    """The verdict on each finding of Gekhman et al. whose conditions were run (`evidence.verdict` of the paired
    interval of the difference that tests it), each with its claim, its comparison and the rule applied."""
    found = by_condition(conditions)
    grid = [found[args.plain(fraction=f)] for f in sorted(args.unknown_fractions) if args.plain(fraction=f) in found]
    plain, stopped, filtered, abstained = (
        found.get(args.plain(m)) for m in ("none", "early_stopping", "filter_unknown", "abstention")
    )
    tested = []  # (number, claim, comparison, direction, rule, verdict's bars)
    if len(grid) >= 2:
        comparison = compare("fewer unknown against more", *_test(records, (grid[0], grid[-1]), "known"), "accuracy")
        rule = "not reproduced only if the interval lies below 0 (their paper gives no size we carry)"
        claim = "Test accuracy on known people falls as the share of unknown fine-tune examples grows"
        tested.append((1, claim, comparison, rule, {}))
    if plain and stopped:
        comparison = compare("early-stopped against last epoch", *_test(records, (stopped, plain), "known"), "accuracy")
        rule = f"not reproduced if the interval lies below {LATE_HARM:.2f}, half their 14 points"
        claim = "The harm comes late: early stopping beats training to convergence"
        tested.append((2, claim, comparison, rule, {"smallest_effect": LATE_HARM}))
    if plain and plain["per_epoch"][-1]["finetune_unknown_exact_match"] is not None:
        known, unknown = (
            (f"{plain['name']}'s fine-tune {group}", rows) for group, rows in unfitted_at_start(records, plain).items()
        )
        comparison = compare(
            "known against unknown: share fitted of those not fitted at epoch 0, over the fine-tuned epochs",
            known,
            unknown,
            "exact_match",
            disjoint=True,
        )
        rule = "known and unknown fine-tune people resampled each within their group; not reproduced if below 0"
        tested.append((3, "Unknown fine-tune examples are fitted more slowly than known ones", comparison, rule, {}))
    if plain and filtered:
        comparison = compare("filtered against all", *_test(records, (filtered, plain), "known"), "accuracy")
        rule = (
            f"reproduced if the interval lies above -{NO_LOSS_MARGIN:.2f}, not reproduced if it lies below "
            f"-{NO_LOSS_MARGIN:.2f} (our margin for 'no loss', set before the first run; their paper gives none)"
        )
        claim = "Dropping the unknown fine-tune examples costs nothing (or gains)"
        tested.append((4, claim, comparison, rule, {"margin": NO_LOSS_MARGIN}))
    if plain and abstained:
        pair = _test(records, (abstained, plain), None)
        comparison = compare("abstention-tuned against plain", *pair, "answered_accuracy")
        rule = f"not reproduced if the interval lies below {ABSTENTION_GAIN:.3f}, half their 23 points"
        claim = 'Relabelling unknown examples "I don\'t know" raises accuracy on the answered questions'
        tested.append((5, claim, comparison, rule, {"smallest_effect": ABSTENTION_GAIN}))
    return [
        {"number": n, "claim": claim, "rule": rule, "comparison": c, "verdict": verdict(c, +1, **bars)}
        for n, claim, c, rule, bars in tested
    ]


def _test(records: pd.DataFrame, pair: tuple[dict, dict], group: str | None) -> list[tuple[str, pd.DataFrame]]:
    """(name, test records at the last or selected epoch) of both conditions of `pair`."""
    return [(c["name"], asked(runs_at(records, c), "test", group)) for c in pair]


def study_evidence(conditions: list[dict], records: pd.DataFrame, args: StudyArguments) -> dict:
    """What results.json says of the evidence: the method, each condition's rates at epoch 0 and at its last (or
    selected) epoch, the comparisons and the findings; where the test people's hallucinated answers come from, per
    condition and epoch (`error_sources.sources_by_epoch`); and the calibration of the confidence on the test
    people at epoch 0 and at each condition's last epoch."""
    trained = [c for c in conditions if not c.get("skipped")]
    test = records[records["split"] == "test"]
    return {
        "error_sources": {
            c["name"]: sources_by_epoch(test[test["condition"] == c["name"]]) for c in trained if "records_of" not in c
        },
        "calibration": {
            # Epoch 0's answers are the same in every run: one copy.
            "epoch0": calibration_by_seed(first_seed(runs_at(test, trained[0], 0))) if trained else None,
            "last": {c["name"]: calibration_by_seed(runs_at(test, c)) for c in trained},
        },
        "intervals": {
            "method": METHOD,
            "epoch0": condition_rates(first_seed(records[records["condition"] == trained[0]["name"]]), trained[0], 0)
            if trained
            else {},
            "conditions": {c["name"]: condition_rates(records, c) for c in trained},
        },
        "comparisons": comparisons(records, trained, args),
        "findings": findings(records, trained, args),
    }


def tied_best(candidates: list[dict], key: str) -> list[dict]:
    """The candidates whose `key` (a dev accuracy) is within `TIE` of the best: the sweep's picks choose among them
    by a tie-break."""
    best = max(candidate[key] for candidate in candidates)
    return [candidate for candidate in candidates if candidate[key] >= best - TIE]


__all__ = [
    "tied_best",
    "METHOD",
    "REPORTED_RATES",
    "comparisons",
    "condition_rates",
    "findings",
    "runs_at",
    "study_evidence",
]
