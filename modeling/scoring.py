"""Scoring a model's factuality on a world's questions: batched greedy answers, a confidence for each, and the
`factuality` metric over all of them and per knowledge category.

`score_questions` is what scripts/score_factuality.py runs, and what training code calls to log factuality.
"""

import functools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import datasets
import evaluate
import torch
from tqdm.auto import tqdm
from transformers import BatchEncoding, PreTrainedModel, PreTrainedTokenizerBase

from .factuality.factuality import classify_answers
from .factuality.world_schema import parse_answer
from .world import KNOWLEDGE_CATEGORIES, Person

METRIC_DIR = Path(__file__).resolve().parent / "factuality"


@functools.cache
def load_factuality_metric(config_name: str = "qa") -> evaluate.EvaluationModule:
    """The repo's `factuality` metric, loaded from its folder (no network)."""
    return evaluate.load(str(METRIC_DIR), config_name, keep_in_memory=True)


@torch.inference_mode()
def answer_questions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int = 64,
    max_new_tokens: int = 24,
    progress: str | None = None,
    **sampling,
) -> tuple[list[str], list[float]]:
    """Greedy answers to `prompts` (in left-padded batches) and, for each, its confidence: the mean log-probability
    (nats, <= 0) of the answer's tokens and of the token that ends it (end of text, or the first newline).

    Returns two lists with one entry per prompt: the answers (`parse_answer` of the continuation) and the confidences.
    `progress` names a console bar over the batches (none by default). `sampling` asks for sampled answers instead
    (`generate` options such as `do_sample=True, temperature=1.0, num_return_sequences=10`): then the lists hold
    `num_return_sequences` entries per prompt, one prompt's after another, and a confidence is that of the sampling
    distribution.

    Raises:
        ValueError: if `prompts` is empty.
    """
    if not prompts:
        raise ValueError("No prompts to answer")
    model.eval()
    answers, confidences = [], []
    # A row stops at its answer's end (see `_answer_length`): what it would generate after that is never read.
    stop_ids = [tokenizer.eos_token_id, *newline_token_ids(tokenizer)]
    for batch in left_padded_batches(tokenizer, prompts, batch_size, model.device, progress):
        output = model.generate(
            **batch,
            **{"do_sample": False, **sampling},
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_ids,
            output_scores=True,
            return_dict_in_generate=True,
        )
        new_tokens = output.sequences[:, batch["input_ids"].shape[1] :]  # (B x samples, N)
        logprobs = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)
        for tokens, token_logprobs in zip(new_tokens.tolist(), logprobs.float().cpu(), strict=True):
            length = _answer_length(tokens, tokenizer)
            answers.append(parse_answer(tokenizer.decode(tokens[:length], skip_special_tokens=True)))
            confidences.append(token_logprobs[:length].mean().item())
    return answers, confidences


def left_padded_batches(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    batch_size: int,
    device: torch.device,
    progress: str | None = None,
) -> Iterator[BatchEncoding]:
    """`prompts` tokenized in left-padded batches of `batch_size` on `device`; with `progress`, a console bar of that
    name over the batches (a stage's own; a training run's evaluations show none)."""
    # Left padding, so every prompt of a batch ends where generation starts. The padding side is given per call: the
    # caller's tokenizer (maybe a trainer's, padding on the right) is left as it is.
    starts = range(0, len(prompts), batch_size)
    for start in starts if progress is None else tqdm(starts, desc=progress, dynamic_ncols=True):
        prompts_batch = list(prompts[start : start + batch_size])
        yield tokenizer(prompts_batch, return_tensors="pt", padding=True, padding_side="left").to(device)


def _scores_by_knowledge(metric: evaluate.EvaluationModule, knowledge: Sequence[str], **columns: list) -> dict:
    """The metric over the rows of each knowledge category that occurs (`columns` are the metric's inputs)."""
    scores = {}
    for category in KNOWLEDGE_CATEGORIES:
        rows = [i for i, row_category in enumerate(knowledge) if row_category == category]
        if rows:
            scores[category] = metric.compute(**{name: [values[i] for i in rows] for name, values in columns.items()})
    return scores


def newline_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids of every token whose text holds a newline: an answer ends at the first of them (or at eos)."""
    texts = tokenizer.batch_decode([[token] for token in range(len(tokenizer))])
    return [token for token, text in enumerate(texts) if "\n" in text]


def _answer_length(tokens: list[int], tokenizer: PreTrainedTokenizerBase) -> int:
    """Number of generated tokens up to and including the one that ends the answer."""
    for index, token in enumerate(tokens):
        if token == tokenizer.eos_token_id or "\n" in tokenizer.decode([token]):
            return index + 1
    return len(tokens)


def score_questions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: datasets.Dataset,
    batch_size: int = 64,
    max_new_tokens: int = 24,
) -> dict:
    """Answer every question of a world's QA split (`answer_questions`) and score the answers (`score_answers`).

    Raises:
        ValueError: if `questions` is empty.
    """
    if len(questions) == 0:
        raise ValueError("The question set is empty")
    predictions, confidences = answer_questions(model, tokenizer, list(questions["prompt"]), batch_size, max_new_tokens)
    return score_answers(questions, predictions, confidences)


def score_answers(questions: datasets.Dataset, predictions: list[str], confidences: list[float]) -> dict:
    """Score a model's answers (`predictions`, one per row of `questions`, a world's QA rows, with their
    `confidences`) with the `factuality` metric, over all rows and per knowledge category.

    Returns `{"metrics": {...}, "by_knowledge": {category: {...}}, "answers": [one dict per question]}` where each
    answer holds the person, attribute, group, knowledge and exposure of the question (group and exposure None where
    `questions` lacks them), the question and its prompt, the reference, the model's answer, its confidence and the
    verdict.

    Raises:
        ValueError: if the answers are not one per question.
    """
    if not len(predictions) == len(confidences) == len(questions):
        raise ValueError(
            f"{len(predictions)} answers and {len(confidences)} confidences for {len(questions)} questions"
        )
    rows = questions.to_list()
    references = [row["answer"] for row in rows]
    verdicts = classify_answers(predictions, references)
    metric = load_factuality_metric()
    metrics = metric.compute(predictions=predictions, references=references, confidences=confidences)

    by_knowledge = _scores_by_knowledge(
        metric,
        [row["knowledge"] for row in rows],
        predictions=predictions,
        references=references,
        confidences=confidences,
    )

    answers = [
        {
            "person_id": row["person_id"],
            "attribute": row["attribute"],
            "group": row.get("group"),
            "knowledge": row["knowledge"],
            "exposure": row.get("exposure"),
            "question": row["question"],
            "prompt": row["prompt"],
            "reference": row["answer"].strip(),
            "prediction": prediction,
            "confidence": confidence,
            "verdict": verdict,
        }
        for row, prediction, confidence, verdict in zip(rows, predictions, confidences, verdicts, strict=True)
    ]
    return {"metrics": metrics, "by_knowledge": by_knowledge, "answers": answers}


def value_token_budget(tokenizer: PreTrainedTokenizerBase, values: Iterable[str]) -> int:
    """New tokens enough for a continuation that states any of `values` and ends: 2 more than the longest of them
    takes after a space (room for a full stop or the newline that ends it), as each is tokenized on its own.

    Raises:
        ValueError: if `values` is empty.
    """
    spaced = sorted({f" {value}" for value in values})
    if not spaced:
        raise ValueError("No values to budget tokens for")
    return 2 + max(len(ids) for ids in tokenizer(spaced, add_special_tokens=False)["input_ids"])


@torch.inference_mode()
def continue_prompts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 64,
    progress: str | None = None,
    **sampling,
) -> list[str]:
    """Continuations of `prompts` (without the prompts), in left-padded batches: greedy, or as `sampling` asks
    (`generate` options such as `do_sample=True, temperature=0.5, num_return_sequences=4`, whose continuations of one
    prompt come one after another). `progress` names a console bar over the batches (none by default)."""
    model.eval()
    continuations = []
    for batch in left_padded_batches(tokenizer, prompts, batch_size, model.device, progress):
        output = model.generate(
            **batch,
            **{"do_sample": False, **sampling},
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )
        continuations += tokenizer.batch_decode(output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return continuations


def score_biographies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    people: Sequence[Person],
    max_new_tokens: int = 96,
    batch_size: int = 64,
) -> dict:
    """Prompt the model with each person's name, let it write on, and score the text's claims against the person's
    record with the metric's "biography" config: what a pre-trained model learned about each person.

    Returns `{"metrics": {...}, "by_knowledge": {category: {...}}, "biographies": [{name, knowledge, text}]}`.
    """
    if not people:
        raise ValueError("No people to write biographies of")
    names = [person.name for person in people]
    texts = [
        name + text
        for name, text in zip(names, continue_prompts(model, tokenizer, names, max_new_tokens, batch_size), strict=True)
    ]
    records = [person.record() for person in people]
    metric = load_factuality_metric("biography")
    by_knowledge = _scores_by_knowledge(
        metric, [person.knowledge for person in people], predictions=texts, references=records
    )
    return {
        "metrics": metric.compute(predictions=texts, references=records),
        "by_knowledge": by_knowledge,
        "biographies": [
            {"name": person.name, "knowledge": person.knowledge, "text": text}
            for person, text in zip(people, texts, strict=True)
        ],
    }


__all__ = [
    "METRIC_DIR",
    "answer_questions",
    "continue_prompts",
    "left_padded_batches",
    "load_factuality_metric",
    "newline_token_ids",
    "score_answers",
    "score_biographies",
    "score_questions",
    "value_token_budget",
]
