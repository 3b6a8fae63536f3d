"""Selective answering built on a detector's scores, and the AUROC that rates a detector.

Selective answering (El-Yaniv & Wiener, 2010): answer when the score is at or above a threshold, abstain otherwise.
The threshold is the one that maximises, on the dev people, the correct minus the wrong answers given (so an
abstention beats a hallucination, and answering beats abstaining whenever the answer is more likely right than
wrong); the test people are scored with it. The risk-coverage curve shows every threshold at once: accuracy on the
answered questions against the share answered.
"""

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc(is_correct: list[bool], scores: list[float]) -> float | None:
    """AUROC of `scores` for telling correct answers (True) from wrong ones; None when one kind is missing."""
    if len(set(is_correct)) < 2:
        return None
    return float(roc_auc_score(is_correct, scores))


def choose_threshold(is_correct: list[bool], scores: list[float]) -> float | None:
    """The score threshold (answer when score >= it) that maximises correct minus wrong answers on these questions;
    of equal thresholds the lowest, which answers most. None (answer nothing) when no threshold gives more right
    answers than wrong ones, or there is no question."""
    if not scores:
        return None
    order = np.argsort(-np.asarray(scores), kind="stable")
    ranked = np.asarray(scores)[order]
    net = np.cumsum(np.where(np.asarray(is_correct)[order], 1, -1))  # net[k]: answer the k+1 highest-scored
    # A threshold answers every tied score at once: only the last of a run of ties is a cut it can make.
    cuts = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    best = cuts[np.flatnonzero(net[cuts] == net[cuts].max())[-1]]  # of equal nets, the most answered
    if net[best] <= 0:
        return None
    return float(ranked[best])


def risk_coverage(is_correct: list[bool], scores: list[float], total: int, points: int = 50) -> list[list[float]]:
    """`[coverage, accuracy]` when the `k` highest-scored answers are given, for up to `points` values of `k` spread
    from 1 to all; coverage is counted over `total` questions (those the model abstained on included)."""
    order = np.argsort(scores)[::-1]
    correct = np.cumsum(np.asarray(is_correct)[order])
    answered = np.linspace(1, len(order), num=min(points, len(order))).round().astype(int)
    return [[int(k) / total, float(correct[k - 1] / k)] for k in answered]


__all__ = ["auroc", "choose_threshold", "risk_coverage"]
