"""Semantic entropy: how much the model's sampled answers to one question disagree in meaning (Farquhar et al. 2024,
"Detecting hallucinations in large language models using semantic entropy"), and the high/low labels that a
semantic-entropy probe learns to predict from a hidden state (Kossen et al. 2024, "Semantic Entropy Probes").

Two answers mean the same here when the `factuality` metric would judge them equal: the same after
`normalize_answer`, or both abstaining. That is the "discrete" semantic entropy: the entropy of the share of the
samples in each meaning, with no probabilities needed.
"""

import math
from collections import Counter

import numpy as np
from sklearn.tree import DecisionTreeRegressor

from ...factuality.factuality import classify_answers
from ...factuality.world_schema import normalize_answer

ABSTAINED = "<abstained>"  # the meaning of every answer that abstains


def meanings(answers: list[str]) -> list[str]:
    """The meaning of each answer: `ABSTAINED` for an abstention, else the answer after `normalize_answer`."""
    # Scored against itself, an answer is "abstained" exactly when it abstains (and "correct" otherwise).
    verdicts = classify_answers(answers, answers)
    return [ABSTAINED if v == "abstained" else normalize_answer(a) for a, v in zip(answers, verdicts, strict=True)]


def semantic_entropy(answers: list[str]) -> float:
    """The entropy (nats) of the meanings of one question's sampled `answers`: 0 when they all mean the same, log(k)
    when they spread evenly over k meanings.

    Raises:
        ValueError: if `answers` is empty.
    """
    if not answers:
        raise ValueError("No sampled answers to take the entropy of")
    counts = Counter(meanings(answers)).values()
    return -sum(n / len(answers) * math.log(n / len(answers)) for n in counts)


def high_entropy_labels(entropies: list[float]) -> tuple[list[bool], float | None]:
    """Kossen et al.'s binarisation: the threshold that splits `entropies` into a low and a high group with the least
    squared error within each (the split of a one-level regression tree), and whether each entropy is above it.
    Returns (labels, threshold); (all False, None) when every entropy is the same."""
    values = np.asarray(entropies, dtype=float).reshape(-1, 1)
    tree = DecisionTreeRegressor(max_depth=1).fit(values, values.ravel())
    if tree.tree_.node_count == 1:
        return [False] * len(entropies), None
    threshold = float(tree.tree_.threshold[0])
    return [bool(v > threshold) for v in values.ravel()], threshold


__all__ = ["ABSTAINED", "high_entropy_labels", "meanings", "semantic_entropy"]
