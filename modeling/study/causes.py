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

from .config import MITIGATIONS, StudyArguments, by_condition
from .evidence import difference_interval, rate_interval
from .findings import asked, runs_at

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
    "dose_response",
    "fitting_points",
    "fitting_regression",
    "loss_or_blocked_gain",
    "study_causes",
]
