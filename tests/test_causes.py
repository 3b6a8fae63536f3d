"""The analyses of the two causes on hand-made records: the fitting shares and Gekhman et al.'s linear model, the
dose-response of pre-training exposure, loss or blocked gain, Figure 3b and thin data at equal steps (whose
schedules are checked here too)."""

from pathlib import Path

import pandas as pd
import pytest

from modeling.study import Condition, StudyArguments
from modeling.study.causes import (
    dose_response,
    figure_3b,
    fitting_points,
    fitting_regression,
    late_change,
    loss_or_blocked_gain,
    thin_data,
)
from modeling.study.causes_report import overfitting_sentence, thin_sentence
from modeling.study.conditions import condition_configs, equal_step_epochs, evaluation_epochs
from modeling.study.config import Run


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


def test_equal_step_epochs_match_the_larger_sets_optimizer_steps():
    # 240 questions in batches of 16: 15 steps an epoch; 60: 4. Epochs 1, 2, 4, 8 of the larger set are 15, 30, 60
    # and 120 steps: 3.75, 7.5, 15 and 30 epochs of the thin one, rounded to 4, 8, 15, 30 (8: equal epochs too).
    assert equal_step_epochs([1, 2, 4, 8], 240, 60, 16) == [4, 8, 15, 30]
    # 30 questions: 2 steps an epoch (16 and 14), so 7.5 -> 8, 15, 30, 60.
    assert equal_step_epochs([1, 2, 4, 8], 240, 30, 16) == [8, 15, 30, 60]
    # 100 questions: 7 steps an epoch; 15/7 = 2.14 epochs a larger epoch: 2.1, 4.3, 8.6, 17.1 round to 2, 4, 9, 17,
    # and epoch 8 is read at equal epochs.
    assert equal_step_epochs([1, 2, 4, 8], 240, 100, 16) == [2, 4, 8, 9, 17]
    assert equal_step_epochs([10, 20], 6, 3, 6) == [10, 20]  # one step an epoch either way


def test_a_thin_run_trains_as_many_steps_as_the_share_grid_and_others_keep_the_schedule(tmp_path):
    config = tmp_path / "finetune.yaml"
    config.write_text("num_train_epochs: 8\nper_device_train_batch_size: 16\n")
    args = StudyArguments(finetune_config=str(config), eval_epochs=[1, 2, 4, 8])  # 240 questions
    thin, grid = (Run(Condition(0.5, "full", "none", size), 0) for size in (60, 240))
    assert condition_configs(thin, args, Path("pretrain"))[1].num_train_epochs == 30
    assert condition_configs(grid, args, Path("pretrain"))[1].num_train_epochs == 8
    assert evaluation_epochs(thin.condition, args, 16) == [4, 8, 15, 30]
    assert evaluation_epochs(Condition(0.0, "lora", "none", 240), args, 16) == [1, 2, 4, 8]


def _run(condition: str, seed: int, dev_by_epoch: dict[int, float]) -> dict:
    return {
        "training_seed": seed,
        "per_epoch": [{"epoch": e, "dev_known_accuracy": a} for e, a in dev_by_epoch.items()],
    }


def _answers(condition: str, epoch: int, rights: list[bool], group: str = "known", split: str = "test") -> list[dict]:
    """One record per person (ids 1, 2, ...) of `condition` at `epoch`, right or hallucinated as `rights` says."""
    return [
        record(
            epoch,
            split,
            "highly_known",
            right,
            "correct" if right else "hallucinated",
            condition=condition,
            person_id=person,
            group=group,
        )  # fmt: skip
        for person, right in enumerate(rights, start=1)
    ]


def _figure_3b_case() -> tuple[pd.DataFrame, list[dict], StudyArguments]:
    """Seed 0. The pre-trained model (epoch 0) has neither of the two test people right. D peaks on dev at epoch 1 (both
    test people right), then has one wrong at epochs 2 and 3; D without unknowns peaks at epoch 2 (both right) and
    ends at epoch 3 with both wrong. Early stop: 1.0 against 1.0; convergence: 0.5 against 0.0. Seed 1: D ran (all
    wrong), the filtered set was left empty and skipped, so seed 1 is left out of both sides."""
    d, filtered = "full_u0.5_n4_none", "full_u0.5_n4_filter_unknown"
    conditions = [
        {"name": d, "fraction_unknown": 0.5, "method": "full", "mitigation": "none", "finetune_size": 4,
         "runs": [_run(d, 0, {1: 0.9, 2: 0.5, 3: 0.4}) | {"num_examples": 4},
                  _run(d, 1, {1: 0.9, 2: 0.5, 3: 0.4}) | {"num_examples": 4}]},
        {"name": filtered, "fraction_unknown": 0.5, "method": "full", "mitigation": "filter_unknown",
         "finetune_size": 4, "runs": [_run(filtered, 0, {1: 0.5, 2: 0.9, 3: 0.1}) | {"num_examples": 2},
                                      {"training_seed": 1, "per_epoch": [], "skipped": True, "num_examples": 0}]},
    ]  # fmt: skip
    rows = _answers(d, 0, [False, False]) + _answers(filtered, 0, [False, False])
    rows += _answers(d, 1, [True, True]) + _answers(d, 2, [True, False]) + _answers(d, 3, [True, False])
    rows += _answers(filtered, 1, [True, False]) + _answers(filtered, 2, [True, True])
    rows += _answers(filtered, 3, [False, False])
    rows += [r | {"training_seed": 1} for e in (0, 1, 2, 3) for r in _answers(d, e, [False, False])]
    args = StudyArguments(finetune_size=4, thin_sizes=[], filtered_fractions=[0.0, 0.5])  # nothing ran at 0: left out
    return pd.DataFrame(rows), conditions, args


def test_figure_3b_compares_d_with_d_without_unknowns_at_early_stop_and_convergence():
    early, converged = figure_3b(*_figure_3b_case())
    assert (early["point"], converged["point"]) == ("early_stop", "convergence")
    assert early["fraction_unknown"] == 0.5 and early["examples"] == [4, 2] and early["training_seeds"] == [0]
    assert [early[k]["estimate"] for k in ("D", "D_without_unknown", "difference")] == [1, 1, 0]
    assert [converged[k]["estimate"] for k in ("D", "D_without_unknown", "difference")] == [0.5, 0, 0.5]


def test_late_change_sets_figure_3b_early_stop_against_convergence_and_the_pretrained_model():
    # From _figure_3b_case: D's late harm 1.0 - 0.5 = 0.5, D without unknowns' 1.0 - 0.0 = 1.0, so D's minus
    # without's is -0.5 (the gap closes after early stop here); each at early stop minus epoch 0's 0.0: +1.0.
    (late,) = late_change(*_figure_3b_case())
    assert late["fraction_unknown"] == 0.5 and late["training_seeds"] == [0]
    estimates = {key: value["estimate"] for key, value in late.items() if isinstance(value, dict)}
    assert estimates == {
        "D_late_harm": 0.5,
        "D_without_unknown_late_harm": 1.0,
        "late_harm_difference": -0.5,
        "D_early_stop_minus_pretrained": 1.0,
        "D_without_unknown_early_stop_minus_pretrained": 1.0,
    }
    for value in late.values():
        if isinstance(value, dict):
            assert value["low"] <= value["estimate"] <= value["high"]


def test_late_change_of_d_against_itself_is_zero_on_every_resample():
    # D without unknowns replaced by D's own records under its name: both late harms are the same on every draw.
    rows, conditions, args = _figure_3b_case()
    d, filtered = conditions
    rows = pd.concat([rows[rows["condition"] != filtered["name"]],
                      rows[rows["condition"] == d["name"]].assign(condition=filtered["name"])])  # fmt: skip
    copy = {**filtered, "runs": [{**run, "num_examples": 4} for run in d["runs"]]}
    (late,) = late_change(rows, [d, copy], args)
    assert late["training_seeds"] == [0, 1]
    assert late["late_harm_difference"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    assert late["D_late_harm"]["low"] < late["D_late_harm"]["high"]  # two seeds: the draws vary


def test_thin_data_reads_each_size_at_equal_epochs_equal_steps_and_early_stop():
    # The reference (4 questions) peaks on dev at epoch 1 (both test people right) and ends at epoch 2 with one of
    # two right. The thin set (2 questions) trains to epoch 4: both right at epoch 2 (equal epochs), both wrong at
    # epoch 4 (equal steps), and its dev accuracy peaks at epoch 3, where one is right. So, against the reference:
    # +0.5 at equal epochs, -0.5 at equal steps, and 0.5 - 1.0 = -0.5 at early stop.
    reference, thin = "full_u0.5_n4_none", "full_u0.5_n2_none"
    conditions = [
        {"name": name, "fraction_unknown": 0.5, "method": "full", "mitigation": "none", "finetune_size": size,
         "runs": [_run(name, 0, dev)]}
        for name, size, dev in ((reference, 4, {1: 0.9, 2: 0.2}), (thin, 2, {1: 0.1, 2: 0.2, 3: 0.9, 4: 0.3}))
    ]  # fmt: skip
    rows = _answers(reference, 1, [True, True]) + _answers(reference, 2, [True, False])
    for epoch, rights in ((1, [False, False]), (2, [True, True]), (3, [True, False]), (4, [False, False])):
        rows += _answers(thin, epoch, rights)
    rows += _answers(thin, 4, [True], split="finetune") + _answers(thin, 4, [False], group="unknown", split="finetune")
    args = StudyArguments(finetune_size=4, thin_sizes=[2], eval_epochs=[1, 2])
    entries = {(e["finetune_size"], e["point"]): e for e in thin_data(pd.DataFrame(rows), conditions, args)}
    assert list(entries) == [
        (size, point) for size in (2, 4) for point in ("equal_epochs", "equal_steps", "early_stop")
    ]
    difference = {point: entries[(2, point)]["known_accuracy_difference"]["estimate"] for point in ("equal_epochs",
                  "equal_steps", "early_stop")}  # fmt: skip
    assert difference == {"equal_epochs": 0.5, "equal_steps": -0.5, "early_stop": -0.5}
    assert entries[(2, "equal_steps")]["known_hallucination_rate_difference"]["estimate"] == 0.5
    assert [entries[(2, p)]["epochs"] for p in ("equal_epochs", "equal_steps", "early_stop")] == [[2], [4], [3]]
    assert entries[(2, "equal_steps")]["fitted"] == {"known": 1.0, "unknown": 0.0}
    assert entries[(2, "equal_epochs")]["fitted"] == {"known": None, "unknown": None}  # no fine-tune record then
    assert entries[(4, "equal_steps")]["known_accuracy_difference"]["estimate"] == 0.0  # the reference itself


def _difference(estimate: float, low: float, high: float) -> dict:
    return {"estimate": estimate, "low": low, "high": high, "people": 10, "seeds": 2}


@pytest.mark.parametrize(
    "low, high, word", [(0.02, 0.2, "shown"), (-0.2, -0.01, "not shown"), (-0.05, 0.1, "inconclusive")]
)
def test_the_thin_data_sentence_reads_the_smallest_size_at_equal_steps(low, high, word):
    key = "known_hallucination_rate_difference"
    tested = (30, "equal_steps")  # the smallest size at equal steps: every other cell spans -1 to 1
    thin = [
        {"finetune_size": size, "point": point,
         key: _difference(value, low, high) if (size, point) == tested else _difference(value, -1, 1)}
        for size, value in ((30, 0.11), (60, 0.5), (240, 0.0))
        for point in ("equal_epochs", "equal_steps", "early_stop")
    ]  # fmt: skip
    sentence = thin_sentence(thin)
    assert f"**{word}**" in sentence and "with 30 questions instead of the 240 of the reference" in sentence
    assert f"differs by +0.11 [{low:+.2f}, {high:+.2f}]" in sentence


def test_the_overfitting_sentence_carries_finding_2_and_figure_3b_at_the_largest_share():
    late = {"number": 2, "verdict": "not reproduced", "rule": "the rule",
            "comparison": {"a": "stopped", "b": "plain", **_difference(-0.01, -0.05, 0.03)}}  # fmt: skip
    figure = [
        {"fraction_unknown": share, "point": point, "difference": _difference(gap, gap - 0.1, gap + 0.1)}
        for share, gaps in ((0.5, (0.0, 0.0)), (1.0, (0.02, -0.2)))
        for point, gap in zip(("early_stop", "convergence"), gaps, strict=True)
    ]
    added = [{"fraction_unknown": share, "late_harm_difference": _difference(gap, gap - 0.05, gap + 0.05)}
             for share, gap in ((0.5, 0.01), (1.0, 0.22))]  # fmt: skip
    sentence = overfitting_sentence([late], figure, added)
    assert sentence.startswith("Overfitting (training on past the best dev epoch): **not shown**: ")
    assert "-0.01 [-0.05, +0.03] (stopped against plain; rule: the rule)" in sentence
    assert (
        "at 100% unknown, D minus D without its unknown examples is +0.02 [-0.08, +0.12] at early stop and " in sentence
    )
    assert "-0.20 [-0.30, -0.10] at convergence, and at that share the part of the late harm that goes" in sentence
    assert sentence.endswith("without them) is +0.22 [+0.17, +0.27].")
    assert overfitting_sentence([late], figure, []).endswith("-0.20 [-0.30, -0.10] at convergence.")
    assert overfitting_sentence([], figure, added).startswith("Overfitting: not tested")
