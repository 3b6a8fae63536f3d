"""Analyses of the records that bear on the causes the study is about (thin data, overfitting):

- **Thin pre-training as a dose-response** (`dose_response`): accuracy, hallucination and abstention on the test
  people after fine-tuning, by how many biographies of the person pre-training read (their designed exposure: 0, 1,
  3 or 10), for the plain run and each mitigation, each rate with its interval over people and seeds.
- **Gekhman et al.'s linear model** (`fitting_regression`; 2024, section 5): test accuracy against the share of the
  fine-tune set that is known and fitted and the share that is unknown and fitted, over every run and evaluated
  epoch of the plain full fine-tunings. Theirs: beta_known +7.3, beta_unknown -8.3 (accuracy in points), R^2 0.86.
  Known and unknown are the probe's categories (SliCK's: any of highly, maybe or weakly known counts as known), as in
  their paper.
- **Loss or blocked gain?** (`loss_or_blocked_gain`): does fine-tuning on unknown facts make the model lose what the
  pre-trained model answered, or miss the gain that fine-tuning on known facts brings? Each plain full fine-tuning
  with unknown examples against epoch 0 and against the same fine-tuning without them, per exposure, paired.
"""

import pandas as pd
from sklearn.linear_model import LinearRegression

from .conditions import early_stopped
from .config import MITIGATIONS, Condition, StudyArguments, by_condition
from .evidence import cell, difference_interval, minus, rate_draws, rate_interval
from .findings import asked, runs_at
from .records import GROUPS

DOSE_RATES = ("accuracy", "hallucination_rate", "abstention_rate")
GEKHMAN_REGRESSION = {"beta_known": 7.3, "beta_unknown": -8.3, "r2": 0.86}


def dose_response(records: pd.DataFrame, conditions: list[dict]) -> dict[str, dict[str, dict]]:
    """Condition name -> exposure (as a string) -> rate -> `evidence.rate_interval`, over the test people at each
    condition's last (or selected) epoch, for `conditions` (results.json conditions)."""
    out = {}
    for condition in conditions:
        test = asked(runs_at(records, condition), "test")
        out[condition["name"]] = {
            str(exposure): {rate: rate_interval(rows, rate) for rate in DOSE_RATES}
            for exposure, rows in test.groupby("exposure", sort=True)
        }
    return out


def fitting_points(records: pd.DataFrame, condition_names: list[str]) -> pd.DataFrame:
    """One row per run (condition, training seed) and evaluated epoch of `condition_names`: `known_fitted` and
    `unknown_fitted` (fine-tune examples of that probe kind answered exactly, as shares of the whole fine-tune set)
    and `test_accuracy` (in points, every test question)."""
    rows = records[records["condition"].isin(condition_names)]
    points = []
    for (name, seed, epoch), run in rows.groupby(["condition", "training_seed", "epoch"], sort=True):
        finetune, test = run[run["split"] == "finetune"], run[run["split"] == "test"]
        unknown = finetune["probe_category"] == "unknown"
        points.append(
            {
                "condition": name,
                "training_seed": int(seed),
                "epoch": int(epoch),
                "known_fitted": float((finetune["exact_match"] & ~unknown).sum() / len(finetune)),
                "unknown_fitted": float((finetune["exact_match"] & unknown).sum() / len(finetune)),
                "test_accuracy": float(100 * (test["verdict"] == "correct").mean()),
            }
        )
    return pd.DataFrame(points)


def fitting_regression(points: pd.DataFrame) -> dict:
    """Least squares of `test_accuracy` on `known_fitted` and `unknown_fitted` (`fitting_points`): the intercept,
    the two betas, R^2 and the number of points; None for a fit with fewer points than 4."""
    if len(points) < 4:
        return None
    inputs = points[["known_fitted", "unknown_fitted"]].to_numpy()
    model = LinearRegression().fit(inputs, points["test_accuracy"].to_numpy())
    return {
        "intercept": float(model.intercept_),
        "beta_known": float(model.coef_[0]),
        "beta_unknown": float(model.coef_[1]),
        "r2": float(model.score(inputs, points["test_accuracy"].to_numpy())),
        "points": len(points),
    }


def loss_or_blocked_gain(records: pd.DataFrame, conditions: list[dict], baseline: dict) -> list[dict]:
    """For each of `conditions` (plain fine-tunings with unknown examples), test known accuracy at its last epoch
    against the pre-trained model (epoch 0: did it lose what it answered before?) and against `baseline`, the same
    fine-tuning without unknown examples (did it miss the gain that fine-tuning on known facts brings?), over all
    known test people and per exposure: paired differences (`evidence.difference_interval`)."""
    out = []
    for condition in conditions:
        last = asked(runs_at(records, condition), "test", "known")
        references = {
            "pre-trained": asked(runs_at(records, condition, 0), "test", "known"),
            baseline["name"]: asked(runs_at(records, baseline), "test", "known"),
        }
        for against, other in references.items():
            groups = [("all", last, other)] + [
                (str(exposure), rows, other[other["exposure"] == exposure])
                for exposure, rows in last.groupby("exposure", sort=True)
            ]
            for exposure, a, b in groups:
                out.append(
                    {
                        "condition": condition["name"],
                        "against": against,
                        "exposure": exposure,
                        **difference_interval(a, b, "accuracy"),
                    }  # fmt: skip
                )
    return out


def _filtered_pairs(conditions: list[dict], args: StudyArguments):
    """(share, (D, D without unknowns), the training seeds both ran) at each share of `args.filtered_fractions`
    where both ran under a common seed (a filtered run with no example left is skipped)."""
    found = by_condition(conditions)
    for fraction in sorted(args.filtered_fractions):
        pair = found.get(args.plain(fraction=fraction)), found.get(args.plain("filter_unknown", fraction))
        if not all(pair):
            continue
        seeds = set.intersection(*({r["training_seed"] for r in c["runs"] if not r.get("skipped")} for c in pair))
        if seeds:
            yield fraction, pair, seeds


def _test_known(records: pd.DataFrame, condition: dict, seeds: set[int], epoch: int | str = "last") -> pd.DataFrame:
    """The known test people's records of `condition`'s runs under `seeds`, at `epoch` (see `runs_at`)."""
    rows = runs_at(records, condition, epoch)
    return asked(rows[rows["training_seed"].isin(seeds)], "test", "known")


def figure_3b(records: pd.DataFrame, conditions: list[dict], args: StudyArguments) -> list[dict]:
    """Gekhman et al.'s Figure 3b: at each share of `args.filtered_fractions` where both ran, the fine-tune set D
    (the plain full run) and D without its unknown examples (`filter_unknown`, the probe's unknown), each at early
    stop (each run's best dev epoch) and at convergence (its last epoch): the test known accuracy of each and D minus
    D-without-unknowns, paired over people and seeds, all over the training seeds both ran (a filtered run with no
    example left is skipped). Their reading: equal at early stop, D below at convergence by a gap that grows with
    the share."""
    out = []
    for fraction, pair, seeds in _filtered_pairs(conditions, args):
        for point, at in (("early_stop", early_stopped), ("convergence", lambda condition: condition)):
            with_unknown, without = (_test_known(records, at(c), seeds) for c in pair)
            out.append(
                {
                    "fraction_unknown": fraction,
                    "point": point,
                    "training_seeds": sorted(seeds),
                    "examples": [
                        _mean([r["num_examples"] for r in c["runs"] if r["training_seed"] in seeds]) for c in pair
                    ],
                    "D": rate_interval(with_unknown, "accuracy"),
                    "D_without_unknown": rate_interval(without, "accuracy"),
                    "difference": difference_interval(with_unknown, without, "accuracy"),
                }
            )
    return out


def late_change(records: pd.DataFrame, conditions: list[dict], args: StudyArguments) -> list[dict]:
    """Figure 3b's two points against each other, at each share where D and D without unknowns both ran: each one's
    late harm (test known accuracy at early stop minus at convergence), D's late harm minus D-without-unknowns'
    (positive when the gap between them opens after early stop, as Gekhman et al. read their Figure 3b: the part of
    the late harm that goes with the unknown examples; the two sets also differ in size), and each one at early stop
    minus the pre-trained model (epoch 0).
    All on the same draws of people and seeds (`evidence.rate_draws`), over the seeds both ran."""
    out = []
    for fraction, (d, without), seeds in _filtered_pairs(conditions, args):
        arms = [
            _test_known(records, early_stopped(d), seeds),
            _test_known(records, d, seeds),
            _test_known(records, early_stopped(without), seeds),
            _test_known(records, without, seeds),
            _test_known(records, d, seeds, epoch=0),
        ]
        d_early, d_last, without_early, without_last, pretrained = rate_draws(arms, "accuracy")
        d_harm, without_harm = (minus(d_early, d_last), minus(without_early, without_last))
        out.append(
            {
                "fraction_unknown": fraction,
                "training_seeds": sorted(seeds),
                "D_late_harm": cell(*d_harm),
                "D_without_unknown_late_harm": cell(*without_harm),
                "late_harm_difference": cell(*minus(d_harm, without_harm)),
                "D_early_stop_minus_pretrained": cell(*minus(d_early, pretrained)),
                "D_without_unknown_early_stop_minus_pretrained": cell(*minus(without_early, pretrained)),
            }
        )
    return out


THIN_RATES = (("known", "accuracy"), ("known", "hallucination_rate"), ("unknown", "hallucination_rate"))
# Equal epochs: the reference's last epoch; equal steps: each run's last; early stop: each run's best dev epoch.
THIN_POINTS = ("equal_epochs", "equal_steps", "early_stop")


def thin_data(records: pd.DataFrame, conditions: list[dict], args: StudyArguments) -> list[dict]:
    """Thin fine-tune data separated from short training: each plain full set at `args.size_fraction` (the thin
    sizes and the `finetune_size` set, the reference) at three points, each against the reference at the same point
    (paired): equal epochs (the reference's last epoch), equal optimizer steps (its own last: a thin set trains as
    many steps as the reference) and early stop (best dev epoch). Per size and point: `THIN_RATES` on the test people
    with intervals, their differences from the reference, and the shares of the fine-tune set fitted."""
    found = by_condition(conditions)
    wanted = (Condition(args.size_fraction, "full", "none", n) for n in sorted({*args.thin_sizes, args.finetune_size}))
    sizes = [found[condition] for condition in wanted if condition in found]
    reference = found.get(args.plain(fraction=args.size_fraction))
    if reference is None or len(sizes) < 2:
        return []
    out = []
    for condition in sizes:
        for point in THIN_POINTS:
            rows, reference_rows = (_thin_point(records, c, point, args) for c in (condition, reference))
            finetune = asked(rows, "finetune")
            entry = {
                "finetune_size": condition["finetune_size"],
                "point": point,
                "epochs": sorted(int(epoch) for epoch in set(rows["epoch"])),
                "optimizer_steps": _mean([run.get("optimizer_steps", 0) for run in condition["runs"]]),
                "fitted": {g: _share_fitted(finetune[finetune["group"] == g]) for g in GROUPS},
            }
            for group, rate in THIN_RATES:
                mine, theirs = asked(rows, "test", group), asked(reference_rows, "test", group)
                entry[f"{group}_{rate}"] = rate_interval(mine, rate)
                entry[f"{group}_{rate}_difference"] = difference_interval(mine, theirs, rate)
            out.append(entry)
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _share_fitted(finetune: pd.DataFrame) -> float | None:
    """The share of fine-tune records answered exactly; None without any."""
    return float(finetune["exact_match"].mean()) if len(finetune) else None


def _thin_point(records: pd.DataFrame, condition: dict, point: str, args: StudyArguments) -> pd.DataFrame:
    """The records of `condition`'s runs at one of `THIN_POINTS`."""
    if point == "equal_epochs":
        return runs_at(records, condition, args.eval_epochs[-1])
    return runs_at(records, early_stopped(condition) if point == "early_stop" else condition)


def study_causes(conditions: list[dict], records: pd.DataFrame, args: StudyArguments) -> dict:
    """What results.json says of the two analyses: the dose-response of the plain run at `mitigation_fraction` and of
    each mitigation, and the linear model over the plain full fine-tunings, beside Gekhman et al.'s."""
    trained = [c for c in conditions if not c.get("skipped")]
    found = by_condition(trained)
    shown = [found[c] for c in (args.plain(m) for m in ("none", *MITIGATIONS)) if c in found]
    plain_full = [c["name"] for c in trained if c["method"] == "full" and c["mitigation"] == "none"]
    baseline = found.get(args.plain(fraction=0.0))
    with_unknown = [
        found[args.plain(fraction=f)] for f in args.unknown_fractions if f > 0 and args.plain(fraction=f) in found
    ]
    return {
        "figure_3b": figure_3b(records, trained, args),
        "late_change": late_change(records, trained, args),
        "thin_data": thin_data(records, trained, args),
        "dose_response": dose_response(records, shown),
        "loss_or_blocked_gain": loss_or_blocked_gain(records, with_unknown, baseline) if baseline else [],
        "fitting_regression": {
            "ours": fitting_regression(fitting_points(records, plain_full)),
            "gekhman": GEKHMAN_REGRESSION,
            "conditions": plain_full,
        },
    }


__all__ = [
    "DOSE_RATES",
    "GEKHMAN_REGRESSION",
    "THIN_POINTS",
    "THIN_RATES",
    "dose_response",
    "figure_3b",
    "fitting_points",
    "fitting_regression",
    "late_change",
    "loss_or_blocked_gain",
    "study_causes",
    "thin_data",
]
