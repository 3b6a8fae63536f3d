"""The hallucination detectors and selective answering: hand-computed cases, and hidden states read at the right
token."""

import pytest
import torch

from modeling.study.detector import auroc, choose_threshold, question_states, risk_coverage
from modeling.study.intervals import auroc_interval


def test_auroc_counts_the_pairs_a_correct_answer_wins():
    # Correct answers score 0.9 and 0.3, wrong ones 0.8 and 0.1: 3 of the 4 (correct, wrong) pairs are ordered right.
    assert auroc([True, False, True, False], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert auroc([True, True], [0.9, 0.1]) is None  # no wrong answer to rank against


def test_auroc_interval_matches_hanley_mcneil_by_hand():
    # A = 0.8, 10 correct, 10 wrong: Q1 = 0.8/1.2, Q2 = 1.28/1.8,
    # variance = (0.16 + 9 * 0.02667 + 9 * 0.07111) / 100 = 0.0104.
    low, high = auroc_interval(0.8, 10, 10)
    assert (low, high) == pytest.approx((0.8 - 1.959964 * 0.0104**0.5, 0.8 + 1.959964 * 0.0104**0.5), abs=1e-3)


def test_the_threshold_maximises_right_minus_wrong_and_answers_most_among_ties():
    # Highest first: right, right, wrong, right, wrong -> net +1, +2, +1, +2, +1: the best (+2) answering 4, at 0.6.
    assert choose_threshold([True, True, False, True, False], [0.9, 0.8, 0.7, 0.6, 0.1]) == 0.6
    # The same answers given in another order: the threshold follows the scores, not the list order.
    assert choose_threshold([False, True, True, False, True], [0.1, 0.6, 0.9, 0.7, 0.8]) == 0.6


def test_no_threshold_when_every_answer_given_would_be_wrong_or_there_is_none():
    assert choose_threshold([False, False], [0.5, 0.2]) is None
    assert choose_threshold([False, True], [0.5, 0.2]) is None  # wrong first: net -1, then 0
    assert choose_threshold([], []) is None


def test_risk_coverage_gives_accuracy_of_the_most_confident_answers_over_all_questions():
    # Highest first: right (0.9), right (0.5), wrong (0.1); 4 questions in all (one the model abstained on).
    assert risk_coverage([True, False, True], [0.9, 0.1, 0.5], total=4) == [[0.25, 1.0], [0.5, 1.0], [0.75, 2 / 3]]
    points = risk_coverage([True] * 200, list(range(200)), total=200, points=50)
    assert len(points) == 50 and points[0][0] == 1 / 200 and points[-1] == [1.0, 1.0]


def test_question_states_are_each_prompts_own_last_state_whatever_the_batch(model, tokenizer):
    prompts = ["Question: Where was Ada born?\nAnswer:", "Question: Who?\nAnswer:"]
    batched = question_states(model, tokenizer, prompts)
    assert batched.shape == (2, model.config.hidden_size)
    for row, prompt in zip(batched, prompts, strict=True):
        with torch.inference_mode():
            alone = model(**tokenizer(prompt, return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0, -1]
        assert row == pytest.approx(alone.numpy(), abs=1e-5)
    assert not batched[0] == pytest.approx(batched[1], abs=1e-3)  # two prompts, two states
