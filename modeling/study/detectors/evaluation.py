"""Every detector of one fine-tuned model, fitted on the dev people's answers and scored on the test people's.

A detector scores each answer the model gave; a good one ranks the correct answers above the hallucinated ones
(AUROC). The answers are the model's own greedy answers from its last evaluation (the study's records), so the
detectors, the metric and the records judge the same answers. Known and unknown people are pooled: a detector has to
tell what the model knows from what it makes up. Answers that abstain are left out (they state nothing).

- `confidence`: the mean log-probability of the answer's tokens; nothing to fit.
- `question_probe`: a logistic regression on the hidden state at the question's last token, before the model answers
  (Azaria & Mitchell 2023's probe, read where Kadavath et al. 2022 read P(IK)).
- `answer_probe`: the same at the answer's first token (Orgad et al. 2025: the exact answer's tokens carry the
  signal).
- `semantic_entropy`: minus the entropy of the meanings of `entropy_samples` answers sampled at `temperature`
  (Farquhar et al. 2024): the expensive reference, which samples at test time.
- `entropy_probe`: a logistic regression on the question's hidden state trained to predict *high* semantic entropy
  on the dev people, not correctness (Kossen et al. 2024): it needs no labels and no sampling at test time; its score
  is the predicted probability of low entropy.

Each probe chooses its layer on the dev people (`probes.fit_probe`). Selective answering (El-Yaniv & Wiener, 2010)
answers when the confidence is at or above the threshold that maximises correct minus wrong answers on the dev
people (`selective.choose_threshold`).
"""

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...factuality.world_schema import DEFAULT_ABSTAIN_PHRASES, POOLS
from ...scoring import answer_questions, value_token_budget
from .hidden_states import read_states
from .probes import fit_probe
from .selective import auroc, choose_threshold, risk_coverage
from .semantic_entropy import high_entropy_labels, semantic_entropy

DETECTORS = ("confidence", "question_probe", "answer_probe", "semantic_entropy", "entropy_probe")
SCORE_FIELDS = ("person_id", "attribute", "group", "verdict", "confidence")  # of each answer, kept with its scores


# What a sampled answer may state and still mean something: every value of every attribute, or an abstain phrase.
ANSWER_TEXTS = [*(value for pool in POOLS.values() for value in pool), *DEFAULT_ABSTAIN_PHRASES]


def _answered(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row["verdict"] != "abstained"]


def _sampled_entropies(
    model, tokenizer, prompts: list[str], samples: int, temperature: float, seed: int = 0
) -> list[float]:
    """The semantic entropy of `samples` answers to each prompt, sampled at `temperature` (no top-k or top-p cut)
    from the random state `seed` sets, so that a run's detectors come out the same whatever ran before them.

    A sampled answer stops after `value_token_budget` of `ANSWER_TEXTS`, every value an attribute can take (`POOLS`,
    which every world draws from) and every abstain phrase: a sample cut there has run past any of them and its end,
    so it is wrong cut or uncut, and only in rare cases does the cut merge or split two samples' meanings (a batch of
    samples at temperature 1 ran to the scoring default of 24 tokens, twice the time)."""
    torch.manual_seed(seed)
    answers, _ = answer_questions(
        model, tokenizer, prompts, max_new_tokens=value_token_budget(tokenizer, ANSWER_TEXTS), do_sample=True,
        temperature=temperature, top_k=0, top_p=1.0, num_return_sequences=samples,
    )  # fmt: skip
    return [semantic_entropy(answers[i * samples : (i + 1) * samples]) for i in range(len(prompts))]


def detector_scores(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dev: list[dict],
    test: list[dict],
    seed: int = 0,
    entropy_samples: int = 10,
    temperature: float = 1.0,
) -> tuple[list[dict], dict]:
    """Every detector's score of each answered `test` question, fitted on the answered `dev` questions (each a record
    of the model's answer: `prompt`, `answer`, `verdict`, `confidence`, `person_id`, `attribute`, `group`).

    Returns (one dict per answered test question: `SCORE_FIELDS`, `is_correct`, each detector's score, None where a
    probe could not be fitted, and the raw `entropy`; the fits: each probe's chosen layer and per-layer dev AUROC, the
    entropy threshold). With `entropy_samples` 0 the two entropy detectors are left out (None).
    """
    dev, test = _answered(dev), _answered(test)
    if not test:
        return [], {}
    states = {
        name: read_states(model, tokenizer, [row["prompt"] for row in rows]) if rows else None
        for name, rows in (("dev", dev), ("test", test))
    }
    dev_correct, dev_people = [row["verdict"] == "correct" for row in dev], [row["person_id"] for row in dev]
    scores: dict[str, list] = {"confidence": [row["confidence"] for row in test]}
    fits = {}
    for name, place in (("question_probe", "question"), ("answer_probe", "answer")):
        probe = fit_probe(states["dev"][place], dev_correct, dev_people, seed) if dev else None
        scores[name] = probe.score(states["test"][place]) if probe else [None] * len(test)
        fits[name] = {"layer": probe.layer, "layer_auroc": probe.layer_auroc} if probe else None
    entropies = [None] * len(test)
    scores["semantic_entropy"] = scores["entropy_probe"] = [None] * len(test)
    if entropy_samples and dev:
        prompts = [row["prompt"] for row in dev + test]
        sampled = _sampled_entropies(model, tokenizer, prompts, entropy_samples, temperature, seed)
        entropies = sampled[len(dev) :]
        scores["semantic_entropy"] = [-value for value in entropies]
        high, threshold = high_entropy_labels(sampled[: len(dev)])
        probe = fit_probe(states["dev"]["question"], high, dev_people, seed)
        if probe:  # its score: the probability of *low* entropy, which goes with a correct answer
            scores["entropy_probe"] = [1 - p for p in probe.score(states["test"]["question"])]
        fits["entropy_probe"] = {"threshold": threshold, "num_high": sum(high)} | (
            {"layer": probe.layer, "layer_auroc": probe.layer_auroc} if probe else {}
        )
    rows = [
        {field: row[field] for field in SCORE_FIELDS}
        | {"is_correct": row["verdict"] == "correct", "entropy": entropies[i]}
        | {name: scores[name][i] for name in DETECTORS}
        for i, row in enumerate(test)
    ]
    return rows, fits


def summarize_detectors(scored: list[dict], dev: list[dict], num_test: int, fits: dict) -> dict:
    """One run's detector figures from `detector_scores`' rows: `num_dev`, `num_test` (questions asked, abstentions
    included), `num_test_answered`, `num_test_correct`, `auroc` per detector (None where undefined), the `fits`,
    the selective-answering `threshold` (on the dev confidences), `selective` and `answer_all` (coverage, accuracy of
    the answered, hallucination rate over all test questions) and `risk_coverage` per detector."""
    is_correct = [row["is_correct"] for row in scored]
    answered_dev = _answered(dev)
    threshold = choose_threshold(
        [row["verdict"] == "correct" for row in answered_dev], [row["confidence"] for row in answered_dev]
    )

    def answering(answered: list[bool]) -> dict:
        given = [c for c, a in zip(is_correct, answered, strict=True) if a]
        return {
            "coverage": len(given) / num_test if num_test else 0.0,
            "accuracy_answered": sum(given) / len(given) if given else None,
            "hallucination_rate": (len(given) - sum(given)) / num_test if num_test else 0.0,
        }

    columns = {name: [row[name] for row in scored] for name in DETECTORS}
    defined = {name: values for name, values in columns.items() if values and None not in values}
    return {
        "num_dev": len(dev),
        "num_test": num_test,
        "num_test_answered": len(scored),
        "num_test_correct": int(np.sum(is_correct)) if scored else 0,
        "auroc": {name: auroc(is_correct, defined[name]) if name in defined else None for name in DETECTORS},
        "fits": fits,
        "threshold": threshold,
        "selective": answering([threshold is not None and row["confidence"] >= threshold for row in scored]),
        "answer_all": answering([True] * len(scored)),
        "risk_coverage": {name: risk_coverage(is_correct, values, num_test) for name, values in defined.items()},
    }


__all__ = ["DETECTORS", "SCORE_FIELDS", "detector_scores", "summarize_detectors"]
