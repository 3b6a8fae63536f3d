"""The model's own signals as a hallucination detector, and selective answering built on one.

Two detectors score each greedy answer to a held-out question; a good one ranks the correct answers above the
hallucinated ones (AUROC: the probability that a random correct answer outranks a random wrong one):

- `confidence`: the mean log-probability of the answer's tokens (`scoring.answer_questions`), nothing to fit;
- `hidden_state_probe`: a logistic regression on the last layer's hidden state at the last token of the question
  (before the model answers), fitted on the dev people: the probe of Azaria & Mitchell (2023), "The Internal State of
  an LLM Knows When It's Lying", read before the answer as in Kadavath et al. (2022)'s P(IK).

Selective answering (El-Yaniv & Wiener, 2010): answer when the confidence is at or above a threshold, abstain
otherwise. The threshold is the one that maximises, on the dev people, the correct minus the wrong answers given
(so an abstention beats a hallucination, and answering beats abstaining whenever the answer is more likely right
than wrong); the test people are scored with it. The risk-coverage curve shows every threshold at once: accuracy on
the answered questions against the share answered.

Known and unknown people are pooled: the detector has to tell what the model knows from what it makes up. A question
the model itself abstained on (it answered "I don't know") is left out of the AUROCs and counts as not answered.
"""

import numpy as np
import torch
from datasets import Dataset
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..factuality.factuality import classify_answers
from ..scoring import answer_questions, left_padded_batches

DETECTORS = ("confidence", "hidden_state_probe")


@torch.inference_mode()
def question_states(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], batch_size: int = 64
) -> np.ndarray:
    """The last layer's hidden state at the last token of each prompt: an array of shape (len(prompts), hidden size).

    Prompts are left-padded, so the last column of every batch is each prompt's last token.
    """
    model.eval()
    states = []
    for batch in left_padded_batches(tokenizer, prompts, batch_size, model.device):
        # Positions counted from each prompt's first real token, as generate() does: a transformer would otherwise
        # read a left-padded prompt at shifted positions (a recurrent model takes no positions and ignores them).
        position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        output = model(**batch, position_ids=position_ids, output_hidden_states=True, use_cache=False)
        states.append(output.hidden_states[-1][:, -1].float().cpu().numpy())
    return np.concatenate(states)


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


Answers = tuple[list[str], list[float]]  # predictions and confidences, one per question (`answer_questions`)


def _answered(model, tokenizer, questions: Dataset, answers: Answers | None) -> dict:
    rows = questions.to_list()
    prompts = [row["prompt"] for row in rows]
    predictions, confidences = answers if answers is not None else answer_questions(model, tokenizer, prompts)
    if len(predictions) != len(rows):
        raise ValueError(f"{len(predictions)} answers given for {len(rows)} questions")
    verdicts = classify_answers(predictions, [row["answer"] for row in rows])
    kept = [i for i, verdict in enumerate(verdicts) if verdict != "abstained"]
    return {
        "total": len(rows),
        "is_correct": [verdicts[i] == "correct" for i in kept],
        "confidence": [confidences[i] for i in kept],
        "states": question_states(model, tokenizer, [prompts[i] for i in kept]) if kept else None,
    }


def evaluate_detectors(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dev: Dataset,
    test: Dataset,
    seed: int = 0,
    dev_answers: Answers | None = None,
    test_answers: Answers | None = None,
) -> dict:
    """Fit on the `dev` questions and score on the `test` questions (each: known and unknown people's QA rows).
    The model's greedy answers to them are generated here unless given (`dev_answers`, `test_answers`: the
    predictions and confidences of `answer_questions`, one per row, e.g. from the evaluation of this same model).

    Returns `{"num_dev", "num_test", "num_test_answered", "num_test_correct", "auroc": {detector: value or None},
    "threshold", "selective": {"coverage", "accuracy_answered", "hallucination_rate"}, "answer_all": {same keys},
    "risk_coverage": {detector: [[coverage, accuracy], ...]}}`, all on the test questions.

    Raises:
        ValueError: if given answers are not one per question.
    """
    dev_answers = _answered(model, tokenizer, dev, dev_answers)
    test_answers = _answered(model, tokenizer, test, test_answers)
    scores = {"confidence": test_answers["confidence"]}
    if len(set(dev_answers["is_correct"])) == 2 and test_answers["states"] is not None:
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, random_state=seed))
        probe.fit(dev_answers["states"], dev_answers["is_correct"])
        scores["hidden_state_probe"] = probe.predict_proba(test_answers["states"])[:, 1].tolist()
    is_correct, total = test_answers["is_correct"], test_answers["total"]

    def answering(answered: list[bool]) -> dict:
        given = [c for c, a in zip(is_correct, answered, strict=True) if a]
        return {
            "coverage": len(given) / total,
            "accuracy_answered": sum(given) / len(given) if given else None,
            "hallucination_rate": (len(given) - sum(given)) / total,
        }

    threshold = choose_threshold(dev_answers["is_correct"], dev_answers["confidence"])
    return {
        "num_dev": dev_answers["total"],
        "num_test": total,
        "num_test_answered": len(is_correct),
        "num_test_correct": sum(is_correct),
        "auroc": {name: auroc(is_correct, scores[name]) if name in scores else None for name in DETECTORS},
        "threshold": threshold,
        "selective": answering([threshold is not None and c >= threshold for c in test_answers["confidence"]]),
        "answer_all": answering([True] * len(is_correct)),
        "risk_coverage": {name: risk_coverage(is_correct, values, total) for name, values in scores.items() if values},
    }


__all__ = ["DETECTORS", "auroc", "choose_threshold", "evaluate_detectors", "question_states", "risk_coverage"]
