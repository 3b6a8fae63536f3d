"""Scoring a model's factuality end to end: batched answers, confidences, verdicts, the report and its script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import checkout_env, tiny_model
from peft import LoraConfig, get_peft_model

from modeling import train_tokenizer
from modeling.scoring import (
    answer_questions,
    newline_token_ids,
    score_biographies,
    score_questions,
    value_token_budget,
)
from modeling.world import WorldConfig, generate_world, load_world, load_world_datasets, save_world

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return save_world(generate_world(WorldConfig(num_people=20, seed=3)), tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def questions(world_dir):
    """The split's first three questions, then three about a person of another knowledge category."""
    split = load_world_datasets(world_dir)["qa_known_finetune"]
    other = next(i for i, category in enumerate(split["knowledge"]) if category != split[0]["knowledge"])
    return split.select([0, 1, 2, other, other + 1, other + 2])


@pytest.fixture(scope="module")
def qa_tokenizer(world_dir):
    splits = load_world_datasets(world_dir)
    texts = list(splits["pretrain"]["text"]) + [r["prompt"] + r["answer"] for r in splits["qa_known_finetune"]]
    return train_tokenizer(texts, vocab_size=400)


@pytest.fixture(scope="module")
def memorizing_model(qa_tokenizer, questions):
    """A tiny model trained until it answers the six questions right: the scorer must call them correct."""
    model = tiny_model(qa_tokenizer, hidden_size=64, num_layers=1).train()
    texts = [row["prompt"] + row["answer"] + qa_tokenizer.eos_token for row in questions]
    batch = qa_tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.mark.learns
def test_memorized_answers_are_scored_correct(memorizing_model, qa_tokenizer, questions):
    report = score_questions(memorizing_model, qa_tokenizer, questions, batch_size=4)
    assert report["metrics"]["accuracy"] == 1.0
    assert [a["verdict"] for a in report["answers"]] == ["correct"] * 6
    assert [a["prediction"] for a in report["answers"]] == [row["answer"].strip() for row in questions]
    assert all(-0.5 < a["confidence"] <= 0 for a in report["answers"])  # sure of what it memorized


def test_batched_answers_and_confidences_match_one_by_one(qa_tokenizer, questions):
    model = tiny_model(qa_tokenizer)
    prompts = [row["prompt"] for row in questions][:4]
    answers, confidences = answer_questions(model, qa_tokenizer, prompts, batch_size=4, max_new_tokens=8)
    for prompt, answer, confidence in zip(prompts, answers, confidences, strict=True):
        ids = qa_tokenizer(prompt, return_tensors="pt").input_ids
        generated = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=qa_tokenizer.eos_token_id)
        new = generated[0, ids.shape[1] :].tolist()
        assert answer == qa_tokenizer.decode(new, skip_special_tokens=True).split("\n")[0].strip()
        # The confidence is the mean log-probability of the answer tokens, up to the one that ends the answer.
        length = next((i + 1 for i, t in enumerate(new) if t == 1 or "\n" in qa_tokenizer.decode([t])), len(new))
        logprobs = model(generated).logits[0, ids.shape[1] - 1 : -1].log_softmax(-1)
        expected = logprobs[torch.arange(length), torch.tensor(new[:length])].mean().item()
        assert confidence == pytest.approx(expected, abs=1e-4)


@pytest.mark.learns
def test_report_counts_and_rates_overall_and_by_knowledge(memorizing_model, qa_tokenizer, questions):
    """The model answers its six memorized questions with their answers, so with the references of rows 1 and 4
    replaced by a wrong value the verdicts are known before scoring: four correct, two hallucinated."""
    wrong = {1, 4}
    altered = questions.map(lambda row, i: {"answer": " Nowhere"} if i in wrong else {}, with_indices=True)
    report = score_questions(memorizing_model, qa_tokenizer, altered, batch_size=4)
    assert [a["verdict"] for a in report["answers"]] == ["hallucinated" if i in wrong else "correct" for i in range(6)]
    assert {k: v for k, v in report["metrics"].items() if k != "auroc"} == pytest.approx(
        dict(accuracy=4 / 6, hallucination_rate=2 / 6, abstention_rate=0.0, precision_answered=4 / 6,
             exact_match=4 / 6, num_correct=4, num_hallucinated=2, num_abstained=0)
    )  # fmt: skip
    categories = questions["knowledge"]
    for category in set(categories):
        rows = [i for i, row_category in enumerate(categories) if row_category == category]
        num_wrong = len(wrong.intersection(rows))
        scores = report["by_knowledge"][category]
        assert (scores["num_correct"], scores["num_hallucinated"]) == (len(rows) - num_wrong, num_wrong)
        assert scores["accuracy"] == pytest.approx((len(rows) - num_wrong) / len(rows))
    assert set(report["by_knowledge"]) == set(categories)


def test_the_tokens_an_answer_stops_at_are_exactly_those_holding_a_newline(qa_tokenizer):
    stops = set(newline_token_ids(qa_tokenizer))
    newline = set(qa_tokenizer("London\nQuestion", add_special_tokens=False)["input_ids"]) - set(
        qa_tokenizer("London Question", add_special_tokens=False)["input_ids"]
    )
    assert newline and newline <= stops
    assert all("\n" in qa_tokenizer.decode([token]) for token in stops)
    others = set(range(len(qa_tokenizer))) - stops
    assert not any("\n" in qa_tokenizer.decode([token]) for token in others)


def test_empty_question_set_is_refused(model, tokenizer, questions):
    with pytest.raises(ValueError, match="question set is empty"):
        score_questions(model, tokenizer, questions.select([]))


@pytest.mark.learns
def test_score_script_writes_a_strict_json_report_and_applies_an_adapter(
    tmp_path, memorizing_model, qa_tokenizer, world_dir
):
    model_dir, adapter_dir = tmp_path / "model", tmp_path / "adapter"
    memorizing_model.save_pretrained(model_dir)
    qa_tokenizer.save_pretrained(model_dir)
    lora = LoraConfig(r=4, target_parameters=["weight_ih_l0", "weight_hh_l0"], init_lora_weights=False)
    get_peft_model(tiny_model(qa_tokenizer, hidden_size=64, num_layers=1), lora).save_pretrained(adapter_dir)
    # The adapter was made on another model instance: only its LoRA weights are saved, and they must be applied.
    reports = {}
    for name, extra in [("base", []), ("adapter", ["--adapter", str(adapter_dir)])]:
        out = tmp_path / f"{name}.json"
        command = [sys.executable, str(REPO / "scripts" / "score_factuality.py"), "--model", str(model_dir)]
        command += [
            "--world",
            str(world_dir),
            "--split",
            "qa_known_finetune",
            "--limit",
            "3",
            "--out",
            str(out),
            *extra,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=True, env=checkout_env())
        assert f"wrote {out}" in result.stdout
        reports[name] = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert reports["base"]["metrics"]["accuracy"] == 1.0 and len(reports["base"]["answers"]) == 3
    assert reports["adapter"]["adapter"] == str(adapter_dir)
    base_conf = [a["confidence"] for a in reports["base"]["answers"]]
    assert [a["confidence"] for a in reports["adapter"]["answers"]] != base_conf


@pytest.mark.learns
def test_memorized_biography_is_fully_supported(world_dir, qa_tokenizer):
    """A model that memorized one person's only biography writes it back: every claim supported, every fact covered."""
    person = next(p for p in load_world(world_dir).people_in("known") if p.exposure == 1)
    model = tiny_model(qa_tokenizer, hidden_size=128, num_layers=1).train()
    batch = qa_tokenizer(person.biographies[0] + qa_tokenizer.eos_token, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(200):
        model(**batch, labels=batch["input_ids"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    report = score_biographies(model.eval(), qa_tokenizer, [person], max_new_tokens=200)
    assert report["biographies"][0]["name"] == person.name
    assert report["biographies"][0]["text"].startswith(person.name)
    assert report["metrics"]["num_claims"] == 6
    assert (report["metrics"]["claim_precision"], report["metrics"]["coverage"]) == (1.0, 1.0)
    assert list(report["by_knowledge"]) == [person.knowledge]


def test_biography_of_nobody_is_refused(model, tokenizer):
    with pytest.raises(ValueError, match="No people"):
        score_biographies(model, tokenizer, [])


def test_a_stage_shows_one_bar_over_its_batches_and_an_evaluation_none(qa_tokenizer, questions, capsys):
    model = tiny_model(qa_tokenizer)
    prompts = [row["prompt"] for row in questions]  # 6 prompts in batches of 4: 2 batches
    quiet = answer_questions(model, qa_tokenizer, prompts, batch_size=4, max_new_tokens=4)
    assert capsys.readouterr().err == ""
    shown = answer_questions(model, qa_tokenizer, prompts, batch_size=4, max_new_tokens=4, progress="epoch 0")
    bar = capsys.readouterr().err
    assert "epoch 0" in bar and "2/2" in bar
    assert shown == quiet  # the bar changes nothing of what is answered


def test_the_value_budget_is_two_tokens_more_than_the_longest_value_after_a_space(qa_tokenizer):
    values = ["Paris", "New York City", "Paris"]
    longest = max(len(qa_tokenizer(f" {value}", add_special_tokens=False)["input_ids"]) for value in values)
    assert value_token_budget(qa_tokenizer, values) == longest + 2
    assert value_token_budget(lambda texts, add_special_tokens: {"input_ids": [list(t) for t in texts]}, values) == 16
    with pytest.raises(ValueError, match="No values"):
        value_token_budget(qa_tokenizer, [])
