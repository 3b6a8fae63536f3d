"""The hallucination detectors and selective answering: hand-computed cases, and hidden states read at the right
token."""

import pytest
import torch
from helpers import tiny_gpt2

from modeling.study.detector import auroc, choose_threshold, question_states, risk_coverage
from modeling.study.intervals import auroc_interval


def test_auroc_counts_the_pairs_a_correct_answer_wins():
    # Correct answers score 0.9 and 0.3, wrong ones 0.8 and 0.1: 3 of the 4 (correct, wrong) pairs are ordered right.
    assert auroc([True, False, True, False], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.75)
    assert auroc([True, True], [0.9, 0.1]) is None  # no wrong answer to rank against


def test_auroc_interval_matches_hanley_mcneil_by_hand():
    # A = 0.8, 5 correct, 20 wrong: Q1 - A^2 = 0.8/1.2 - 0.64 = 0.026667, Q2 - A^2 = 1.28/1.8 - 0.64 = 0.071111,
    # variance = (0.16 + 4 * 0.026667 + 19 * 0.071111) / (5 * 20) = 0.0161778 (counts swapped: 0.0095111).
    half = 1.959964 * 0.0161778**0.5
    assert auroc_interval(0.8, 5, 20) == pytest.approx((0.8 - half, min(1.0, 0.8 + half)), abs=1e-5)


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
def test_question_states_are_each_prompts_own_last_state_whatever_the_batch(model_type, model, tokenizer):
    if model_type == "gpt2":  # positions matter: a left-padded prompt must be read from position 0
        model = tiny_gpt2(tokenizer, max_position_embeddings=64)
    prompts = ["Question: Where was Ada born?\nAnswer:", "Question: Who?\nAnswer:"]
    batched = question_states(model, tokenizer, prompts)
    assert batched.shape[0] == 2
    for row, prompt in zip(batched, prompts, strict=True):
        with torch.inference_mode():
            alone = model(**tokenizer(prompt, return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0, -1]
        assert row == pytest.approx(alone.numpy(), abs=1e-5)
    assert not batched[0] == pytest.approx(batched[1], abs=1e-3)  # two prompts, two states
