"""The hallucination detectors and selective answering: hand-computed cases, hidden states read at the right tokens,
probes that choose the layer holding the signal, semantic entropy, and the detectors judging the answers on record."""

import math

import numpy as np
import pytest
import torch
from helpers import tiny_gpt2

from modeling.study.detectors import (
    auroc,
    choose_threshold,
    detector_scores,
    fit_probe,
    high_entropy_labels,
    meanings,
    read_states,
    risk_coverage,
    semantic_entropy,
    summarize_detectors,
)


def test_auroc_counts_the_pairs_a_correct_answer_wins():
    # Correct answers score 0.9 and 0.3, wrong ones 0.8 and 0.1: 3 of the 4 (correct, wrong) pairs are ordered right.
    assert auroc([True, False, True, False], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert auroc([True, True], [0.9, 0.1]) is None  # no wrong answer to rank against


def test_the_threshold_maximises_right_minus_wrong_and_answers_most_among_ties():
    # Highest first: right, right, wrong, right, wrong -> net +1, +2, +1, +2, +1: the best (+2) answering 4, at 0.6.
    assert choose_threshold([True, True, False, True, False], [0.9, 0.8, 0.7, 0.6, 0.1]) == 0.6
    # The same answers given in another order: the threshold follows the scores, not the list order.
    assert choose_threshold([False, True, True, False, True], [0.1, 0.6, 0.9, 0.7, 0.8]) == 0.6


def test_tied_scores_are_answered_together():
    # Two answers tie at 0.5, one right and one wrong: a threshold answers both (net 0) or neither, in either order.
    assert choose_threshold([False, True], [0.5, 0.5]) is None
    assert choose_threshold([True, False], [0.5, 0.5]) is None
    # Highest first: right (0.9), then a tie at 0.5 of right, right, wrong (net +2 after it): the tie is worth taking.
    assert choose_threshold([True, True, False, True], [0.9, 0.5, 0.5, 0.5]) == 0.5
    # Right (0.9), then a tie of wrong, wrong, right (net 0 after it): stop above the tie.
    assert choose_threshold([True, False, False, True], [0.9, 0.5, 0.5, 0.5]) == 0.9


def test_no_threshold_when_every_answer_given_would_be_wrong_or_there_is_none():
    assert choose_threshold([False, False], [0.5, 0.2]) is None
    assert choose_threshold([False, True], [0.5, 0.2]) is None  # wrong first: net -1, then 0
    assert choose_threshold([], []) is None


def test_risk_coverage_gives_accuracy_of_the_most_confident_answers_over_all_questions():
    # Highest first: right (0.9), right (0.5), wrong (0.1); 4 questions in all (one the model abstained on).
    assert risk_coverage([True, False, True], [0.9, 0.1, 0.5], total=4) == [[0.25, 1.0], [0.5, 1.0], [0.75, 2 / 3]]
    points = risk_coverage([True] * 200, list(range(200)), total=200, points=50)
    assert len(points) == 50 and points[0][0] == 1 / 200 and points[-1] == [1.0, 1.0]


@pytest.mark.parametrize("model_type", ["lstm", "gpt2"])
def test_states_are_each_prompts_own_at_the_question_and_at_its_first_answer_token(model_type, model, tokenizer):
    if model_type == "gpt2":  # positions matter: a left-padded prompt must be read from position 0
        model = tiny_gpt2(tokenizer, max_position_embeddings=64)
    prompts = ["Question: Where was Ada born?\nAnswer:", "Question: Who?\nAnswer:"]
    states = read_states(model, tokenizer, prompts)
    layers = model.config.num_hidden_layers if model_type == "gpt2" else model.config.num_layers
    assert states["question"].shape == states["answer"].shape == (layers, 2, states["question"].shape[-1])
    for row, prompt in enumerate(prompts):
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        first = model.generate(ids, do_sample=False, max_new_tokens=1, pad_token_id=tokenizer.pad_token_id)[:, -1:]
        with torch.inference_mode():
            question = model(ids, output_hidden_states=True).hidden_states
            answer = model(torch.cat([ids, first], dim=1), output_hidden_states=True).hidden_states
        for layer in range(layers):  # index 0 of the states is the first layer after the embeddings
            assert states["question"][layer, row] == pytest.approx(question[layer + 1][0, -1].numpy(), abs=1e-5)
            assert states["answer"][layer, row] == pytest.approx(answer[layer + 1][0, -1].numpy(), abs=1e-5)
    assert not states["question"][-1, 0] == pytest.approx(states["question"][-1, 1], abs=1e-3)  # two prompts
    assert not states["answer"][-1, 0] == pytest.approx(states["question"][-1, 0], abs=1e-3)  # two places


def _layered(signal_layer: int, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """States of 3 layers x rows x 4 dimensions: noise, but for one dimension of `signal_layer` that follows labels."""
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(3, len(labels), 4))
    states[signal_layer, :, 2] += 3.0 * labels
    return states


@pytest.mark.parametrize("signal_layer", [0, 2])
def test_a_probe_chooses_the_layer_that_holds_the_signal(signal_layer):
    labels = np.tile([True, False, False, True], 30)  # 120 rows, 2 per person, each person with both labels
    people = np.repeat(np.arange(60), 2)
    probe = fit_probe(_layered(signal_layer, labels), list(labels), list(people))
    assert probe.layer == signal_layer and len(probe.layer_auroc) == 3
    assert probe.layer_auroc[signal_layer] > 0.9 and min(probe.layer_auroc) < 0.7
    fresh = _layered(signal_layer, labels, seed=1)
    assert auroc(list(labels), probe.score(fresh)) > 0.9  # it generalises to new rows


def test_a_probe_fits_float32_states_with_subnormal_units():
    # A saturated LSTM's units (the sweep's LoRA at 3e-2): one unit at float32 subnormals near 1e-43, one constant.
    labels = np.tile([True, False, False, True], 30)
    people = np.repeat(np.arange(60), 2)
    states = _layered(1, labels).astype(np.float32)
    tiny = np.float32(-7.45e-43)  # its spread, a tenth of rows one subnormal step away, has a scale below float32's
    states[:, :, 0] = np.where(np.arange(120) % 10, tiny, np.nextafter(tiny, np.float32(0)))
    states[:, :, 1] = -1.0
    probe = fit_probe(states, list(labels), list(people))
    assert probe.layer == 1 and probe.layer_auroc[1] > 0.9
    scores = probe.score(states)
    assert np.isfinite(scores).all() and auroc(list(labels), scores) > 0.9
    assert probe.pipeline[-1].coef_[0][0] == 0  # the dust is a constant unit, not a feature


def test_no_probe_without_two_people_holding_each_label():
    labels = [True, True, False, False, False]
    assert fit_probe(np.zeros((1, 5, 2)), labels, [1, 1, 2, 3, 4]) is None  # every right answer is person 1's
    assert fit_probe(np.random.default_rng(0).normal(size=(1, 5, 2)), labels, [1, 2, 3, 4, 5]) is not None


def test_semantic_entropy_counts_meanings_not_strings():
    # "Paris" and " paris." mean the same, "Rome" another, an abstention a third: shares 1/2, 1/4, 1/4.
    answers = ["Paris", " paris.", "Rome", "I don't know"]
    assert meanings(answers) == ["paris", "paris", "rome", "<abstained>"]
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))  # 1.0397 nats
    assert semantic_entropy(answers) == pytest.approx(expected)
    assert semantic_entropy(["Rome", "rome!"]) == 0.0
    with pytest.raises(ValueError, match="No sampled answers"):
        semantic_entropy([])


def test_high_entropy_is_the_split_with_the_least_squared_error():
    # Splitting after 0.1: low {0, 0, 0.1} (mean 1/30, SSE 0.00667) and high {1.2, 1.3} (SSE 0.005): the least of
    # the four splits; the tree puts its threshold half-way, at 0.65.
    labels, threshold = high_entropy_labels([0.0, 1.2, 0.0, 1.3, 0.1])
    assert labels == [False, True, False, True, False] and threshold == pytest.approx(0.65)
    assert high_entropy_labels([0.4, 0.4, 0.4]) == ([False] * 3, None)


def _record(person: int, verdict: str, confidence: float, prompt: str = "Question: Who?\nAnswer:") -> dict:
    return {"prompt": prompt, "answer": "x", "verdict": verdict, "confidence": confidence, "person_id": person,
            "attribute": "birth_city", "group": "known"}  # fmt: skip


def test_the_detectors_score_the_answers_on_record_and_leave_abstentions_out(model, tokenizer):
    prompts = ["Question: Where was Ada born?\nAnswer:", "Question: Who?\nAnswer:", "Question: When?\nAnswer:"]
    dev = [_record(p % 6, v, -1.0, prompts[p % 3]) for p, v in enumerate(["correct", "hallucinated"] * 6)]
    test = [_record(10, "correct", -0.1), _record(11, "hallucinated", -2.0), _record(12, "abstained", -0.5),
            _record(13, "correct", -0.3, prompts[0])]  # fmt: skip
    scored, fits = detector_scores(model, tokenizer, dev, test, entropy_samples=3)
    assert [row["person_id"] for row in scored] == [10, 11, 13]  # the abstention is not scored
    assert [row["confidence"] for row in scored] == [-0.1, -2.0, -0.3]  # the recorded confidences, as they are
    assert [row["is_correct"] for row in scored] == [True, False, True]
    for row in scored:
        assert row["semantic_entropy"] == -row["entropy"] and 0 <= row["entropy"] <= math.log(3) + 1e-9
        assert all(row[name] is not None for name in ("question_probe", "answer_probe"))
    assert {"question_probe", "answer_probe", "entropy_probe"} <= set(fits)
    summary = summarize_detectors(scored, dev, len(test), fits)
    assert summary["num_test"] == 4 and summary["num_test_answered"] == 3 and summary["num_test_correct"] == 2
    assert summary["auroc"]["confidence"] == 1.0  # both right answers are more confident than the wrong one
    assert summary["answer_all"] == {"coverage": 0.75, "accuracy_answered": 2 / 3, "hallucination_rate": 0.25}
    without, _ = detector_scores(model, tokenizer, dev, test, entropy_samples=0)
    assert all(row["semantic_entropy"] is None and row["entropy_probe"] is None for row in without)


def test_the_entropy_probe_scores_low_predicted_entropy_as_likely_right(monkeypatch):
    # Hand-made states: on dev, the high-entropy questions have +3 in dimension 0 of every layer; on test, answer 0
    # looks like them and answer 1 does not. The probe must rank answer 1 (low entropy predicted) above answer 0.
    from modeling.study.detectors import evaluation

    dev = [_record(p, "correct" if p % 2 else "hallucinated", -1.0, f"q{p}") for p in range(12)]
    test = [_record(20, "hallucinated", -1.0, "t0"), _record(21, "correct", -1.0, "t1")]
    high = {f"q{p}" for p in range(0, 12, 2)}  # the dev questions with a high entropy
    rng = np.random.default_rng(0)

    def states(model, tokenizer, prompts):
        rows = rng.normal(scale=0.1, size=(2, len(prompts), 3))
        rows[:, :, 0] += [3.0 if p in high or p == "t0" else 0.0 for p in prompts]
        return {"question": rows, "answer": rows}

    def entropies(model, tokenizer, prompts, samples, temperature, seed):
        return [1.5 if p in high or p == "t0" else 0.0 for p in prompts]

    monkeypatch.setattr(evaluation, "read_states", states)
    monkeypatch.setattr(evaluation, "_sampled_entropies", entropies)
    scored, fits = evaluation.detector_scores(None, None, dev, test, entropy_samples=4)
    assert fits["entropy_probe"]["num_high"] == 6 and fits["entropy_probe"]["threshold"] == pytest.approx(0.75)
    assert scored[1]["entropy_probe"] > 0.5 > scored[0]["entropy_probe"]
    assert [row["semantic_entropy"] for row in scored] == [-1.5, 0.0]


def test_the_sampled_answers_come_from_the_runs_own_seed_whatever_ran_before(monkeypatch):
    from modeling.study.detectors import evaluation

    def answers(model, tokenizer, prompts, num_return_sequences, **sampling):  # "a" or "b", as torch's state draws
        drawn = torch.randint(0, 2, (len(prompts) * num_return_sequences,)).tolist()
        return ["ab"[i] for i in drawn], [0.0] * len(drawn)

    monkeypatch.setattr(evaluation, "answer_questions", answers)
    prompts = [f"q{i}" for i in range(20)]
    first = evaluation._sampled_entropies(None, CharTokenizer(), prompts, 4, 1.0, seed=0)
    torch.rand(5)  # another stage drew from the global state meanwhile
    assert evaluation._sampled_entropies(None, CharTokenizer(), prompts, 4, 1.0, seed=0) == first
    assert evaluation._sampled_entropies(None, CharTokenizer(), prompts, 4, 1.0, seed=1) != first


def test_a_sampled_answer_stops_two_tokens_after_the_longest_value_or_abstain_phrase(monkeypatch):
    from modeling.factuality.world_schema import DEFAULT_ABSTAIN_PHRASES, POOLS
    from modeling.study.detectors import evaluation

    asked = []

    def answers(model, tokenizer, prompts, num_return_sequences, max_new_tokens, **sampling):
        asked.append(max_new_tokens)
        return ["a"] * (len(prompts) * num_return_sequences), [0.0] * (len(prompts) * num_return_sequences)

    monkeypatch.setattr(evaluation, "answer_questions", answers)
    evaluation._sampled_entropies(None, CharTokenizer(), ["q0", "q1"], 3, 1.0)
    longest_value = max(len(value) for pool in POOLS.values() for value in pool)  # one token a character
    longest = max(longest_value, *map(len, DEFAULT_ABSTAIN_PHRASES))
    assert asked == [1 + longest + 2]  # a space, the value or phrase, then room for the token that ends it
    # The study's tokenizer takes more tokens for " I do not know" (10) than for any value (6): a budget over the
    # values alone cut every sampled abstention short, and it no longer abstained.
    assert set(DEFAULT_ABSTAIN_PHRASES) <= set(evaluation.ANSWER_TEXTS)


class CharTokenizer:
    """One token per character: token counts by hand."""

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict:
        return {"input_ids": [list(text) for text in texts]}
