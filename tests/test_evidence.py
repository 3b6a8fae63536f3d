"""The study's evidence from hand-made records: the clustered, seed-resampling bootstrap against hand computation,
verdicts, where wrong answers come from, and calibration."""

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from modeling.study.calibration import calibration, calibration_by_seed
from modeling.study.error_sources import error_sources, source_shares, taught_values
from modeling.study.evidence import (
    STATISTICS,
    _draw_people,
    auroc_intervals,
    bootstrap,
    difference_interval,
    person_seed_table,
    rate_interval,
    verdict,
)


def records(rows: list[tuple[int, int, str]]) -> pd.DataFrame:
    """Records from (training seed, person, verdict) triples."""
    frame = pd.DataFrame(rows, columns=["training_seed", "person_id", "verdict"])
    frame["exact_match"] = frame["verdict"] == "correct"
    return frame


def test_one_question_per_person_gives_the_binomial_bootstrap():
    # 10 people, one question each, 3 right: a resample's count of right answers is Binomial(10, 0.3), whose 2.5%
    # quantile is 0 (P(0) = 0.028) and 97.5% quantile 6 (P(<=5) = 0.953, P(<=6) = 0.989); its sd sqrt(.21/10).
    rows = records([(0, p, "correct" if p < 3 else "hallucinated") for p in range(10)])
    result = rate_interval(rows, "accuracy", resamples=20000)
    assert (result["estimate"], result["low"], result["high"]) == pytest.approx((0.3, 0.0, 0.6))
    (table,) = [person_seed_table(rows, STATISTICS["accuracy"], [0], list(range(10)))]
    drawn = bootstrap([table], resamples=20000)[0]
    assert drawn.std() == pytest.approx(math.sqrt(0.21 / 10), abs=0.004)
    assert drawn.mean() == pytest.approx(0.3, abs=0.004)


def test_people_are_resampled_whole_not_question_by_question():
    # Two people with three questions each, one always right and one always wrong: a resample draws {A, A}, {A, B}
    # or {B, B} with probabilities 1/4, 1/2, 1/4, so the rate is 1, 0.5 or 0 and the interval [0, 1]. Resampling the
    # six questions on their own would give a narrower one.
    rows = records([(0, person, "correct" if person == 0 else "hallucinated") for person in (0, 1) for _ in range(3)])
    (table,) = [person_seed_table(rows, STATISTICS["accuracy"], [0], [0, 1])]
    drawn = bootstrap([table], resamples=20000)[0]
    assert set(np.unique(drawn)) == {0.0, 0.5, 1.0}
    assert np.mean(drawn == 0.5) == pytest.approx(0.5, abs=0.02)
    result = rate_interval(rows, "accuracy")
    assert (result["estimate"], result["low"], result["high"], result["people"]) == (0.5, 0.0, 1.0, 2)


def test_seeds_are_resampled_too():
    # One person, two seeds: right under seed 0, wrong under seed 1. The estimate is the mean over seeds (0.5); a
    # resample draws the seeds {0, 0}, {0, 1} or {1, 1}, so the interval spans [0, 1] though each seed alone is sure.
    rows = records([(0, 0, "correct"), (1, 0, "hallucinated")])
    result = rate_interval(rows, "accuracy", resamples=4000)
    assert (result["estimate"], result["low"], result["high"], result["seeds"]) == (0.5, 0.0, 1.0, 2)


def test_a_difference_is_paired_on_the_same_people_and_seeds():
    # Condition a is right wherever b is, and on person 2 too (4 people, the same under both seeds). Paired, a
    # resample's difference is (times person 2 is drawn) / 4, Binomial(4, 1/4) / 4: P(0) = 0.316, so the 2.5%
    # quantile is 0; P(<= 2) = 243/256 = 0.949 and P(<= 3) = 255/256, so the 97.5% quantile is 3/4. Unpaired, the
    # two rates would vary apart and the interval reach below 0. Identical conditions give exactly 0.
    b = records([(s, p, "correct" if p < 2 else "hallucinated") for s in (0, 1) for p in range(4)])
    a = records([(s, p, "correct" if p < 3 else "hallucinated") for s in (0, 1) for p in range(4)])
    result = difference_interval(a, b, "accuracy", resamples=20000)
    assert (result["estimate"], result["low"], result["high"]) == (0.25, 0.0, 0.75)
    assert (result["people"], result["seeds"]) == (4, 2)
    same = difference_interval(b, b, "accuracy")
    assert (same["estimate"], same["low"], same["high"]) == (0.0, 0.0, 0.0)


def test_a_difference_counts_only_the_seeds_both_sides_have():
    # Seed 1 of a was skipped: the comparison is seed 0's alone (b's seed 1, all wrong, would pull b down).
    a = records([(0, 0, "correct"), (0, 1, "hallucinated")])
    b = records([(0, 0, "correct"), (0, 1, "correct"), (1, 0, "hallucinated"), (1, 1, "hallucinated")])
    result = difference_interval(a, b, "accuracy")
    assert (result["estimate"], result["seeds"]) == (-0.5, 1)
    assert difference_interval(a, records([(2, 0, "correct")]), "accuracy")["estimate"] is None


def test_answered_accuracy_counts_only_answered_questions():
    rows = records([(0, 0, "correct"), (0, 0, "abstained"), (0, 1, "hallucinated"), (0, 1, "abstained")])
    assert rate_interval(rows, "answered_accuracy")["estimate"] == 0.5
    assert rate_interval(rows, "abstention_rate")["estimate"] == 0.5


@pytest.mark.parametrize(
    ("low", "high", "direction", "bars", "expected"),
    [
        (0.02, 0.10, +1, {}, "reproduced"),
        (-0.10, -0.02, -1, {}, "reproduced"),  # a fall, where the finding says fall
        (-0.05, 0.10, +1, {}, "inconclusive"),
        (-0.10, -0.02, +1, {}, "not reproduced"),
        (-0.02, 0.05, +1, {"smallest_effect": 0.07}, "not reproduced"),  # rules out half the published 14 points
        (-0.02, 0.09, +1, {"smallest_effect": 0.07}, "inconclusive"),
        (-0.04, -0.01, +1, {"margin": 0.05}, "reproduced"),  # a loss, but smaller than the margin of "no loss"
        (-0.10, -0.06, +1, {"margin": 0.05}, "not reproduced"),  # a loss beyond the margin
        (-0.08, -0.01, +1, {"margin": 0.05}, "inconclusive"),  # a loss, maybe within the margin
    ],
)
def test_verdicts_follow_the_interval_of_the_difference(low, high, direction, bars, expected):
    assert verdict({"low": low, "high": high}, direction, **bars) == expected


def test_an_undefined_difference_is_inconclusive():
    assert verdict({"low": None, "high": None}, +1) == "inconclusive"


def test_error_sources_on_hand_made_answers():
    taught = taught_values(
        [
            {"attribute": "city", "answer": " Paris"},
            {"attribute": "city", "answer": " Paris"},
            {"attribute": "city", "answer": " Rome"},
            {"attribute": "city", "answer": " I don't know"},  # teaches no value
        ]
    )
    assert taught == {"city": Counter({"paris": 2, "rome": 1})}
    # The world: 10 people; values paris 3, rome 2, oslo 4, lima 1 (person 0 lives in oslo).
    world = {"city": Counter({"paris": 3, "rome": 2, "oslo": 4, "lima": 1})}
    asked = [("Paris", "hallucinated"), ("Rome", "hallucinated"), ("Lima", "hallucinated"), ("Tokyo", "hallucinated"),
             ("Oslo", "correct")]  # fmt: skip
    rows = [{"person_id": 0, "attribute": "city", "reference": " Oslo", "answer": a, "verdict": v} for a, v in asked]
    columns = error_sources(rows, taught, world)
    assert [c["error_source"] for c in columns] == ["hedged_default", "borrowed", "other_person", "none", None]
    # The 6 people not in oslo: 3 in paris (the default), 2 in rome (borrowed), 1 in lima.
    assert columns[0]["chance_hedged_default"] == pytest.approx(3 / 6)
    assert columns[0]["chance_borrowed"] == pytest.approx(2 / 6)
    shares = source_shares(pd.DataFrame([row | column for row, column in zip(rows, columns, strict=True)]))
    assert shares["hallucinated"] == 4
    assert shares["shares"] == {"hedged_default": 0.25, "borrowed": 0.25, "other_person": 0.25, "none": 0.25}
    assert shares["chance"] == {"hedged_default": pytest.approx(0.5), "borrowed": pytest.approx(1 / 3)}


def test_a_value_taught_once_like_every_other_is_no_default():
    taught = {"city": Counter({"paris": 1, "rome": 1})}
    row = {"person_id": 0, "attribute": "city", "reference": " Oslo", "answer": "Paris", "verdict": "hallucinated"}
    (column,) = error_sources([row], taught, {"city": Counter({"paris": 1, "rome": 1, "oslo": 1})})
    assert (column["error_source"], column["chance_hedged_default"], column["chance_borrowed"]) == ("borrowed", 0, 1)


def test_an_answer_scored_against_an_abstention_target_has_no_source():
    (column,) = error_sources(
        [
            {
                "person_id": 0,
                "attribute": "city",
                "reference": " I don't know",
                "answer": "Paris",
                "verdict": "hallucinated",
            }
        ],
        {"city": Counter({"paris": 1})},
        {"city": Counter({"paris": 1, "oslo": 1})},
    )
    assert column["error_source"] is None


def test_calibration_matches_hand_computation():
    # exp(confidence): 0.95, 0.95 (bin 9; one right), 0.25, 0.25, 0.25, 0.25 (bin 2; all right), and an abstention.
    confidences = [math.log(0.95)] * 2 + [math.log(0.25)] * 4 + [0.0]
    verdicts = ["correct", "hallucinated", "correct", "correct", "correct", "correct", "abstained"]
    result = calibration(pd.DataFrame({"confidence": confidences, "verdict": verdicts}))
    assert result["answered"] == 6
    assert [(b["low"], b["count"]) for b in result["bins"]] == [(0.2, 4), (0.9, 2)]
    # ECE = 4/6 * |1 - 0.25| + 2/6 * |0.5 - 0.95| = 0.5 + 0.15
    assert result["ece"] == pytest.approx(0.65)


def test_a_confidence_of_one_falls_in_the_last_bin():
    result = calibration(pd.DataFrame({"confidence": [0.0], "verdict": ["correct"]}))
    assert [(b["low"], b["high"], b["accuracy"]) for b in result["bins"]] == [(0.9, 1.0, 1.0)]
    assert result["ece"] == 0.0


def test_disjoint_groups_are_resampled_each_within_itself():
    # a: people 0 and 1, always right; b: person 2 right, person 3 wrong. Within their groups every resample keeps
    # two of each, so a's rate is always 1 and the difference is 1 - (0, 0.5 or 1) with chances 1/4, 1/2, 1/4.
    a = records([(0, 0, "correct"), (0, 1, "correct")])
    b = records([(0, 2, "correct"), (0, 3, "hallucinated")])
    result = difference_interval(a, b, "accuracy", resamples=20000, disjoint=True)
    assert (result["estimate"], result["low"], result["high"], result["people"]) == (0.5, 0.0, 1.0, 4)
    tables = [person_seed_table(rows, STATISTICS["accuracy"], [0], [0, 1, 2, 3]) for rows in (a, b)]
    drawn = bootstrap(tables, resamples=20000, strata=np.array([1, 1, 0, 0]))
    assert (drawn[0] == 1.0).all()  # never a resample without a's people
    assert np.mean(drawn[0] - drawn[1] == 0.5) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="some people are on both sides"):
        difference_interval(a, a, "accuracy", disjoint=True)


def test_calibration_by_seed_averages_each_seeds_ece():
    # Seed 0: one answer at 0.95, right (ECE 0.05); seed 1: one at 0.95, wrong (ECE 0.95). Pooled, the bin would be
    # half right at 0.95 (ECE 0.45): the mean over seeds is 0.5.
    rows = pd.DataFrame(
        {"training_seed": [0, 1], "confidence": [math.log(0.95)] * 2, "verdict": ["correct", "hallucinated"]}
    )
    result = calibration_by_seed(rows)
    assert result["ece_by_seed"] == pytest.approx([0.05, 0.95])
    assert (result["ece"], result["answered"]) == (pytest.approx(0.5), 1)
    assert [(b["count"], b["accuracy"]) for b in result["bins"]] == [(2, 0.5)]


def scored(seed_rows: dict[int, list[tuple[int, bool, float, float]]]) -> pd.DataFrame:
    """Detector scores from {training seed: [(person, is_correct, score a, score b), ...]}."""
    rows = [(seed, *row) for seed, rows in seed_rows.items() for row in rows]
    return pd.DataFrame(rows, columns=["training_seed", "person_id", "is_correct", "a", "b"])


SCORED = {
    0: [(1, True, 0.9, 0.2), (1, False, 0.4, 0.3), (2, True, 0.7, 0.8), (2, False, 0.8, 0.1), (3, False, 0.1, 0.5),
        (3, True, 0.6, 0.6)],
    1: [(1, True, 0.5, 0.9), (1, False, 0.5, 0.2), (2, False, 0.9, 0.4), (2, True, 0.3, 0.7), (3, True, 0.8, 0.1),
        (3, False, 0.2, 0.3)],
}  # fmt: skip


def test_auroc_estimates_are_each_seeds_auroc_averaged():
    # Seed 0, detector a: correct 0.9, 0.7, 0.6 against wrong 0.4, 0.8, 0.1 -> 7 of 9 pairs won; seed 1: correct 0.5,
    # 0.3, 0.8 against wrong 0.5, 0.9, 0.2 -> 0.5 beats 0.2 and ties 0.5, 0.3 beats 0.2, 0.8 beats 0.5 and 0.2:
    # 4 won + 1 tie -> 4.5 of 9.
    result = auroc_intervals(scored(SCORED), ["a", "b"], baseline="a", resamples=200)
    assert result["a"]["estimate"] == pytest.approx((7 / 9 + 4.5 / 9) / 2)
    expected_b = np.mean([roc_auc_score(*zip(*[(r[1], r[3]) for r in SCORED[s]], strict=True)) for s in (0, 1)])
    assert result["b"]["estimate"] == pytest.approx(expected_b)
    assert result["b"]["minus_baseline"]["estimate"] == pytest.approx(expected_b - (7 / 9 + 4.5 / 9) / 2)
    assert "minus_baseline" not in result["a"] and (result["people"], result["seeds"]) == (3, 2)


def test_auroc_intervals_are_the_bootstrap_of_weighted_aurocs_over_people_and_seeds():
    # The same draws done by hand: scikit-learn's AUROC with each answer weighted by its person's draws, averaged
    # over the drawn seeds, for each of 300 resamples; then the 2.5th and 97.5th percentiles.
    frame, resamples = scored(SCORED), 300
    rng = np.random.default_rng(0)
    people, seeds = _draw_people(rng, 3, resamples, None), rng.integers(0, 2, size=(resamples, 2))
    by_hand = {"a": [], "b": []}
    for r in range(resamples):
        counts = np.bincount(people[r], minlength=3)
        for detector in ("a", "b"):
            per_seed = []
            for seed in seeds[r]:
                run = frame[frame["training_seed"] == seed]
                weights = counts[run["person_id"].to_numpy() - 1]
                labels = run["is_correct"].to_numpy()
                if weights[labels].sum() and weights[~labels].sum():
                    per_seed.append(roc_auc_score(labels, run[detector], sample_weight=weights))
            by_hand[detector].append(np.mean(per_seed) if per_seed else np.nan)
    result = auroc_intervals(frame, ["a", "b"], baseline="a", resamples=resamples)
    a, b = np.array(by_hand["a"]), np.array(by_hand["b"])
    assert [result["a"]["low"], result["a"]["high"]] == pytest.approx(np.nanpercentile(a, [2.5, 97.5]))
    difference = np.nanpercentile(b - a, [2.5, 97.5])
    assert [result["b"]["minus_baseline"]["low"], result["b"]["minus_baseline"]["high"]] == pytest.approx(difference)


def test_a_detector_against_itself_differs_by_exactly_zero_and_a_perfect_one_scores_one():
    frame = scored(SCORED)
    frame["same"], frame["perfect"] = frame["a"], frame["is_correct"].astype(float)
    result = auroc_intervals(frame, ["a", "same", "perfect"], baseline="a", resamples=300)
    assert result["same"]["minus_baseline"] == {"estimate": 0.0, "low": 0.0, "high": 0.0}
    perfect = result["perfect"]
    assert (perfect["estimate"], perfect["low"], perfect["high"]) == (1.0, 1.0, 1.0)
    assert perfect["minus_baseline"]["estimate"] == pytest.approx(1 - result["a"]["estimate"])


def test_a_detector_with_a_missing_score_or_no_wrong_answer_has_no_interval():
    frame = scored(SCORED)
    frame.loc[0, "b"] = np.nan  # a probe that could not be fitted in one run
    assert auroc_intervals(frame, ["a", "b"], baseline="a", resamples=50)["b"] is None
    right = scored({0: [(1, True, 0.3, 0.1), (2, True, 0.9, 0.2)]})
    assert auroc_intervals(right, ["a", "b"], baseline="a", resamples=50)["a"] == {
        "estimate": None, "low": None, "high": None
    }  # fmt: skip
