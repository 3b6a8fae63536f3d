"""The analyses of the two causes on hand-made records: the fitting shares and Gekhman et al.'s linear model, and
the dose-response of pre-training exposure."""

import pandas as pd
import pytest

from modeling.study.causes import dose_response, fitting_points, fitting_regression, loss_or_blocked_gain


def record(epoch: int, split: str, probe: str, exact: bool, verdict: str = "correct", **fields) -> dict:
    return {"condition": "full_u0.5_n4_none", "training_seed": 0, "epoch": epoch, "split": split,
            "probe_category": probe, "exact_match": exact, "verdict": verdict} | fields  # fmt: skip


def test_fitting_points_count_shares_of_the_whole_fine_tune_set():
    rows = [
        # Epoch 1: of 4 fine-tune examples, 2 known to the probe (1 fitted) and 2 unknown (1 fitted); test 1 of 4.
        record(1, "finetune", "highly_known", False),
        record(1, "finetune", "weakly_known", True),  # SliCK: weakly known counts as known
        record(1, "finetune", "unknown", True),
        record(1, "finetune", "unknown", False),
        *[record(1, "test", "maybe_known", True, v) for v in ("correct", "hallucinated", "abstained", "hallucinated")],
        record(2, "finetune", "unknown", True),
        record(2, "test", "unknown", True),
        record(2, "finetune", "highly_known", True, condition="other"),  # not asked for
    ]
    points = fitting_points(pd.DataFrame(rows), ["full_u0.5_n4_none"])
    assert points[["epoch", "known_fitted", "unknown_fitted", "test_accuracy"]].values.tolist() == [
        [1, 0.25, 0.25, 25.0],
        [2, 0.0, 1.0, 100.0],
    ]


def test_the_linear_model_recovers_a_known_law():
    # accuracy = 10 + 5 * known - 3 * unknown, exactly, on 5 points: the fit finds it with R^2 = 1.
    shares = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5), (1.0, 0.2)]
    points = pd.DataFrame(
        [{"known_fitted": k, "unknown_fitted": u, "test_accuracy": 10 + 5 * k - 3 * u} for k, u in shares]
    )
    fit = fitting_regression(points)
    assert (fit["intercept"], fit["beta_known"], fit["beta_unknown"], fit["r2"]) == pytest.approx((10, 5, -3, 1))
    assert fit["points"] == 5
    assert fitting_regression(points.head(3)) is None


def test_dose_response_groups_the_test_people_by_exposure_at_the_last_epoch():
    rows = [
        # Exposure 10: two people, both right at the last epoch (epoch 2); exposure 0: one person, wrong.
        *[record(2, "test", "highly_known", True, person_id=p, exposure=10) for p in (1, 2)],
        record(2, "test", "unknown", False, "hallucinated", person_id=3, exposure=0),
        record(1, "test", "unknown", False, "abstained", person_id=3, exposure=0),  # an earlier epoch: not counted
        record(2, "finetune", "unknown", True, person_id=4, exposure=0),  # not a test person
    ]
    condition = {"name": "full_u0.5_n4_none"}
    dose = dose_response(pd.DataFrame(rows), [condition])["full_u0.5_n4_none"]
    assert list(dose) == ["0", "10"]
    assert dose["10"]["accuracy"]["estimate"] == 1.0 and dose["10"]["accuracy"]["people"] == 2
    assert dose["0"]["hallucination_rate"]["estimate"] == 1.0 and dose["0"]["abstention_rate"]["estimate"] == 0.0


def test_loss_or_blocked_gain_compares_with_epoch_0_and_with_the_run_without_unknowns():
    # Two known test people (exposure 10 and 3), one question each. Pre-trained (epoch 0): both right. The run with
    # unknowns ends with person 1 wrong; the run without them keeps both right: a loss of 0.5 against both.
    def rows(condition: str, epoch: int, wrong: set[int]) -> list[dict]:
        return [
            record(
                epoch,
                "test",
                "highly_known",
                p not in wrong,
                "hallucinated" if p in wrong else "correct",
                condition=condition,
                group="known",
                person_id=p,
                exposure=e,
            )  # fmt: skip
            for p, e in ((1, 10), (2, 3))
        ]

    frame = pd.DataFrame(
        rows("full_u1_n4_none", 0, set()) + rows("full_u1_n4_none", 8, {1}) + rows("full_u0_n4_none", 8, set())
    )
    out = loss_or_blocked_gain(frame, [{"name": "full_u1_n4_none"}], {"name": "full_u0_n4_none"})
    found = {(d["against"], d["exposure"]): d["estimate"] for d in out}
    assert found == {
        ("pre-trained", "all"): -0.5,
        ("pre-trained", "3"): 0.0,
        ("pre-trained", "10"): -1.0,
        ("full_u0_n4_none", "all"): -0.5,
        ("full_u0_n4_none", "3"): 0.0,
        ("full_u0_n4_none", "10"): -1.0,
    }
