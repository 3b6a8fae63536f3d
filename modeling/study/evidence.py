"""Intervals that fit the study's design, computed from its per-answer records (`records.py`).

The design is crossed: the same test people are asked under every training seed, and neither the six questions about
one person nor the answers of one fine-tuning run are independent. Every rate therefore gets a bootstrap interval
that resamples both factors with replacement, independently (Owen, 2007, "The pigeonhole bootstrap", for two crossed
random factors): each resample draws the people (each with all their questions) and the training seeds, and the
statistic is the mean over the drawn seeds of each seed's rate over the drawn people. A difference between two
conditions (or two epochs) uses the same draws on both sides, so what they share cancels: the same people, and the
seeds paired by number (between two conditions the runs of one seed number are independent draws, so that pairing
neither helps nor hurts). The interval is the 2.5th to 97.5th percentile of the resampled statistic (the percentile
method). It runs narrow with few clusters: resampling 3 seeds gives on average 2/3 of their variance, and ~20 test
people per group are few. Every interval is conditional on the study's one world and one pre-training; whole-study
`seeds` vary those. scipy's `bootstrap` resamples one level of independent observations, hence the few lines here.

Verdicts follow the interval of the difference (`verdict`): *reproduced* when it excludes 0 in the published
direction, *not reproduced* when it lies wholly below the smallest effect that would still count as the published
one, *inconclusive* otherwise.
"""

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

RESAMPLES = 4000


@dataclass(frozen=True)
class Statistic:
    """A rate over records: the share of the `counted` records (all, or e.g. only answered ones) that are `hits`."""

    name: str
    hit: str  # a verdict, or "exact_match"
    counted: str = "all"  # "all" or "answered" (not abstained)

    def columns(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(hit, counted) as 0/1 arrays over `rows`."""
        hit = rows["exact_match"].to_numpy() if self.hit == "exact_match" else (rows["verdict"] == self.hit).to_numpy()
        counted = np.ones(len(rows)) if self.counted == "all" else (rows["verdict"] != "abstained").to_numpy()
        return hit.astype(float) * counted, counted.astype(float)


STATISTICS = {
    s.name: s
    for s in (
        Statistic("accuracy", "correct"),
        Statistic("hallucination_rate", "hallucinated"),
        Statistic("abstention_rate", "abstained"),
        Statistic("exact_match", "exact_match"),
        Statistic("answered_accuracy", "correct", "answered"),
    )
}


def person_seed_table(
    rows: pd.DataFrame, statistic: Statistic, seeds: list[int], people: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Hits and counted records of `rows` summed per training seed and person: two arrays of shape
    (len(seeds), len(people)), zero where a seed or person has no record."""
    hit, counted = statistic.columns(rows)
    seed_index = pd.Index(seeds).get_indexer(rows["training_seed"])
    person_index = pd.Index(people).get_indexer(rows["person_id"])
    if (seed_index < 0).any() or (person_index < 0).any():
        raise ValueError("records of a seed or person outside the table")
    hits, counts = np.zeros((len(seeds), len(people))), np.zeros((len(seeds), len(people)))
    np.add.at(hits, (seed_index, person_index), hit)
    np.add.at(counts, (seed_index, person_index), counted)
    return hits, counts


def _seed_mean(hits: np.ndarray, counts: np.ndarray) -> float:
    """The mean over seeds of each seed's rate over all people (seeds without a counted record left out)."""
    totals = counts.sum(axis=1)
    rates = hits.sum(axis=1)[totals > 0] / totals[totals > 0]
    return float(rates.mean()) if len(rates) else float("nan")


def bootstrap(
    tables: list[tuple[np.ndarray, np.ndarray]],
    resamples: int = RESAMPLES,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """The two-level bootstrap of each table's rate (`person_seed_table`s of the same seeds and people), the same
    draws of people and seeds for every table: an array of shape (len(tables), resamples), NaN where a resample
    counted nothing. With `strata` (a label per person), people are drawn within each stratum, so each keeps its
    size."""
    num_seeds, num_people = tables[0][0].shape
    rng = np.random.default_rng(seed)
    people = _draw_people(rng, num_people, resamples, strata)
    seeds = rng.integers(0, num_seeds, size=(resamples, num_seeds))
    out = np.empty((len(tables), resamples))
    for index, (hits, counts) in enumerate(tables):
        drawn_hits, drawn_counts = hits[:, people].sum(-1), counts[:, people].sum(-1)  # (seeds, resamples)
        with np.errstate(invalid="ignore", divide="ignore"):
            rates = drawn_hits / drawn_counts
        picked = rates[seeds.T, np.arange(resamples)]  # (drawn seeds, resamples)
        with warnings.catch_warnings():  # a resample that counted nothing is NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            out[index] = np.nanmean(picked, axis=0)
    return out


def _draw_people(rng: np.random.Generator, num_people: int, resamples: int, strata: np.ndarray | None) -> np.ndarray:
    """Person indices of each resample, shape (resamples, num_people): drawn with replacement, within each stratum."""
    if strata is None:
        return rng.integers(0, num_people, size=(resamples, num_people))
    drawn = []
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        drawn.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(drawn, axis=1)


def _interval(values: np.ndarray) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _tables(arms: list[pd.DataFrame], statistic: Statistic) -> list[tuple[np.ndarray, np.ndarray]]:
    seeds = sorted(set().union(*(arm["training_seed"] for arm in arms)))
    people = sorted(set().union(*(arm["person_id"] for arm in arms)))
    return [person_seed_table(arm, statistic, seeds, people) for arm in arms]


def rate_draws(arms: list[pd.DataFrame], statistic: str, resamples: int = RESAMPLES, seed: int = 0) -> list:
    """`statistic` of each of `arms` (records of the same people and seeds, e.g. two architectures' answers on one
    world) as (estimate, its values under the same `bootstrap` resamples for every arm)."""
    tables = _tables(arms, STATISTICS[statistic])
    drawn = bootstrap(tables, resamples, seed)
    return [(_seed_mean(*table), values) for table, values in zip(tables, drawn, strict=True)]


def rate_interval(rows: pd.DataFrame, statistic: str, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """`statistic` (a name of `STATISTICS`) over `rows`: its estimate (the mean over seeds) and 95% interval
    (`bootstrap`), with the numbers of people and seeds; estimate None when nothing is counted."""
    if not len(rows):
        return {"estimate": None, "low": None, "high": None, "people": 0, "seeds": 0}
    (table,) = _tables([rows], STATISTICS[statistic])
    estimate = _seed_mean(*table)
    low, high = _interval(bootstrap([table], resamples, seed)[0])
    return {
        "estimate": None if np.isnan(estimate) else estimate,
        "low": low,
        "high": high,
        "people": int(rows["person_id"].nunique()),
        "seeds": int(rows["training_seed"].nunique()),
    }


def difference_interval(
    a: pd.DataFrame,
    b: pd.DataFrame,
    statistic: str,
    resamples: int = RESAMPLES,
    seed: int = 0,
    disjoint: bool = False,
) -> dict:
    """`statistic` of `a` minus that of `b`, with the 95% interval of the difference (`bootstrap`, the same draws
    for both sides), over the training seeds both sides have (a run skipped under one seed leaves that seed out of
    the comparison). Paired when `a` and `b` are records of the same people (e.g. two conditions on the test
    people); with `disjoint`, they are of different people (e.g. known and unknown fine-tune people), each side's
    people resampled within their own group.

    Raises:
        ValueError: if `disjoint` and a person is on both sides.
    """
    common = set(a["training_seed"]) & set(b["training_seed"])
    a, b = a[a["training_seed"].isin(common)], b[b["training_seed"].isin(common)]
    if not common:
        return {"estimate": None, "low": None, "high": None, "people": 0, "seeds": 0}
    tables = _tables([a, b], STATISTICS[statistic])
    estimate = _seed_mean(*tables[0]) - _seed_mean(*tables[1])
    strata = None
    if disjoint:
        if set(a["person_id"]) & set(b["person_id"]):
            raise ValueError("disjoint=True, but some people are on both sides of the difference")
        people = sorted(set(a["person_id"]) | set(b["person_id"]))
        strata = np.isin(people, a["person_id"].unique()).astype(int)
    drawn = bootstrap(tables, resamples, seed, strata)
    low, high = _interval(drawn[0] - drawn[1])
    return {
        "estimate": None if np.isnan(estimate) else estimate,
        "low": low,
        "high": high,
        "people": int(pd.concat([a["person_id"], b["person_id"]]).nunique()),
        "seeds": int(pd.concat([a["training_seed"], b["training_seed"]]).nunique()),
    }


def _pair_wins(scores: np.ndarray, is_correct: np.ndarray) -> np.ndarray:
    """(correct answers, wrong answers) matrix: 1 where the correct one scores higher, 0.5 on a tie, else 0."""
    right, wrong = scores[is_correct][:, None], scores[~is_correct][None, :]
    return (right > wrong) + 0.5 * (right == wrong)


def _weighted_aurocs(weights: np.ndarray, is_correct: np.ndarray, wins: np.ndarray) -> np.ndarray:
    """The AUROC under each row of `weights` (resamples, answers), an answer counted as often as its weight: the
    weighted share of (correct, wrong) pairs the correct one wins (scikit-learn's `roc_auc_score` with
    `sample_weight` gives the same); NaN where the weights leave no correct or no wrong answer."""
    right, wrong = weights[:, is_correct], weights[:, ~is_correct]
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((right @ wins) * wrong).sum(1) / (right.sum(1) * wrong.sum(1))


def person_draws(num_people: int, num_seeds: int, resamples: int = RESAMPLES, seed: int = 0):
    """The draws of the two-level bootstrap as `bootstrap` makes them: how often each person is drawn in each
    resample, shape (resamples, num_people), and the seed indices drawn, shape (resamples, num_seeds)."""
    rng = np.random.default_rng(seed)
    drawn_people = _draw_people(rng, num_people, resamples, None)
    drawn_seeds = rng.integers(0, num_seeds, size=(resamples, num_seeds))
    counts = np.zeros((resamples, num_people))
    np.add.at(counts, (np.arange(resamples)[:, None], drawn_people), 1)
    return counts, drawn_seeds


def auroc_draws(
    rows: pd.DataFrame, detector: str, seeds: list[int], people: list[int], draws: tuple[np.ndarray, np.ndarray]
) -> tuple[float, np.ndarray]:
    """The AUROC of the `detector` column over `rows` (scored answers of `seeds` and `people`): its estimate, the mean
    over seeds of each seed's AUROC, and its value under each resample of `draws` (`person_draws`): each seed's
    AUROC with a person's answers counted as often as the person is drawn, averaged over the drawn seeds (NaN where
    undefined)."""
    counts, drawn_seeds = draws
    estimates, resampled = [], []
    for training_seed in seeds:
        run = rows[rows["training_seed"] == training_seed]
        is_correct = run["is_correct"].to_numpy(bool)
        wins = _pair_wins(run[detector].to_numpy(float), is_correct)
        estimates.append(_weighted_aurocs(np.ones((1, len(run))), is_correct, wins)[0])
        resampled.append(_weighted_aurocs(counts[:, pd.Index(people).get_indexer(run["person_id"])], is_correct, wins))
    with warnings.catch_warnings():  # a resample without a right or a wrong answer is NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        statistic = np.nanmean(np.asarray(resampled)[drawn_seeds.T, np.arange(len(counts))], axis=0)
        return float(np.nanmean(estimates)), statistic


def auroc_intervals(
    rows: pd.DataFrame, detectors: list[str], baseline: str, resamples: int = RESAMPLES, seed: int = 0
) -> dict:
    """The AUROC of each detector over `rows` (scored answers: `training_seed`, `person_id`, `is_correct` and a
    score column per detector), as the mean over seeds of each seed's AUROC, with its 95% interval, and its
    difference from `baseline`'s with the paired interval: the two-level bootstrap of `bootstrap` (people and seeds
    drawn with replacement; a drawn person's answers counted once per draw), the same draws for every detector
    (`auroc_draws`). A detector with a missing score (a probe that could not be fitted) gets None.

    Returns `{detector: {"estimate", "low", "high", "minus_baseline": {"estimate", "low", "high"}}}` (the baseline
    without `minus_baseline`) with `people` and `seeds`.
    """
    seeds, people = sorted(rows["training_seed"].unique()), sorted(rows["person_id"].unique())
    draws = person_draws(len(people), len(seeds), resamples, seed)
    defined = {d: auroc_draws(rows, d, seeds, people, draws) for d in detectors if rows[d].notna().all()}
    out: dict = {"people": len(people), "seeds": len(seeds)}
    for detector in detectors:
        if detector not in defined:
            out[detector] = None
            continue
        out[detector] = cell(*defined[detector])
        if detector != baseline and baseline in defined:
            out[detector]["minus_baseline"] = cell_difference(defined[detector], defined[baseline])
    return out


def minus(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> tuple[float, np.ndarray]:
    """a minus b, each (estimate, resampled values on the same draws): differences of differences nest."""
    return a[0] - b[0], a[1] - b[1]


def cell_difference(a: tuple[float, np.ndarray], b: tuple[float, np.ndarray]) -> dict:
    """a minus b, each (estimate, resampled values on the same draws), with the 95% interval of the difference."""
    return cell(*minus(a, b))


def cell(estimate: float, drawn: np.ndarray) -> dict:
    """An estimate with the 95% interval of its resampled values; all None when it is undefined (NaN)."""
    if np.isnan(estimate):
        return {"estimate": None, "low": None, "high": None}
    low, high = _interval(drawn)
    return {"estimate": float(estimate), "low": low, "high": high}


def verdict(difference: dict, direction: int, smallest_effect: float = 0.0, margin: float = 0.0) -> str:
    """The verdict on a published finding from the interval of the difference that tests it.

    Args:
        difference: `difference_interval`'s result.
        direction: +1 when the finding says the difference is positive, -1 negative.
        smallest_effect: the smallest effect (in the published direction, >= 0) that would still count as the
            published one. 0: only an effect in the other direction refutes the finding.
        margin: for a finding of *no* harm (non-inferiority), the harm (>= 0) still counted as none.

    Returns:
        With the interval signed by `direction`: "reproduced" when it lies above -margin (above 0 for `margin` 0),
        "not reproduced" when it lies below `smallest_effect - margin`, else (or when undefined) "inconclusive".
    """
    if difference["low"] is None:
        return "inconclusive"
    low, high = sorted((direction * difference["low"], direction * difference["high"]))
    if low > -margin:
        return "reproduced"
    if high < smallest_effect - margin:
        return "not reproduced"
    return "inconclusive"


__all__ = [
    "RESAMPLES",
    "auroc_draws",
    "auroc_intervals",
    "cell",
    "cell_difference",
    "minus",
    "person_draws",
    "STATISTICS",
    "Statistic",
    "bootstrap",
    "difference_interval",
    "person_seed_table",
    "rate_draws",
    "rate_interval",
    "verdict",
]
