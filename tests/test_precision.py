"""Mixed precision: a fine-tuning trained in bfloat16 autocast records the answers its saved float32 model gives, and
one evaluation's generation serves every question set and the detector."""

from pathlib import Path

import pytest
import torch
from helpers import tiny_model
from transformers import AutoModelForCausalLM
from trl import SFTConfig

from modeling import train_tokenizer
from modeling.lstm import modeling_lstm
from modeling.run_config import parse_run_config
from modeling.scoring import score_questions
from modeling.training.factuality_trainer import score_question_sets
from modeling.training.finetuning import DEFAULTS, FinetuneArguments, build_trainer
from modeling.training.precision import float32_forward
from modeling.world import WorldConfig, generate_world, load_world_datasets, save_world


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> FinetuneArguments:
    root = tmp_path_factory.mktemp("base")
    save_world(generate_world(WorldConfig(num_people=20, seed=3)), root / "world")
    splits = load_world_datasets(root / "world")
    texts = list(splits["pretrain"]["text"]) + [r["prompt"] + r["answer"] for r in splits["qa_unknown_finetune"]]
    tokenizer = train_tokenizer(texts, vocab_size=400)
    tiny_model(tokenizer, hidden_size=64, num_layers=1).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return FinetuneArguments(model_dir=str(root / "model"), world_dir=str(root / "world"), finetune_size=6)


@pytest.fixture(scope="module")
def bf16_trainer(base, tmp_path_factory):
    """A full fine-tuning trained under accelerate's bfloat16 autocast, evaluated after each of its 3 epochs."""
    settings = {**DEFAULTS, "output_dir": str(tmp_path_factory.mktemp("run")), "bf16": True,
                "num_train_epochs": 3, "per_device_train_batch_size": 6, "eval_strategy": "epoch",
                "learning_rate": 0.01}  # fmt: skip
    config = parse_run_config((SFTConfig,), [f"--{k}={v}" for k, v in settings.items()])[0]
    trainer = build_trainer(base, config)
    trainer.train()
    return trainer


def reloaded(trainer, folder: Path):
    trainer.model.save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), trainer.processing_class


def test_float32_forward_runs_the_trained_model_as_its_saved_copy(bf16_trainer, tmp_path):
    model = bf16_trainer.model.eval()
    saved, _ = reloaded(bf16_trainer, tmp_path / "saved")
    ids = torch.tensor([[5, 9, 14, 3], [7, 7, 21, 30]])
    assert saved.dtype == torch.float32
    mixed = model(input_ids=ids).logits
    with float32_forward(model):
        assert torch.equal(model(input_ids=ids).logits, saved(input_ids=ids).logits)
    assert not torch.equal(mixed, saved(input_ids=ids).logits)  # the autocast really was on during training
    assert torch.equal(model(input_ids=ids).logits, mixed)  # and is on again after the block


def test_recorded_answers_are_those_of_the_saved_model(bf16_trainer, tmp_path):
    saved, tokenizer = reloaded(bf16_trainer, tmp_path / "saved")
    latest = bf16_trainer.latest_answers
    assert latest["step"] == bf16_trainer.state.global_step
    expected = score_question_sets(saved, tokenizer, bf16_trainer.factuality_sets, bf16_trainer.args)
    assert set(latest["sets"]) == set(bf16_trainer.factuality_sets) == {"finetune", "qa_known_heldout",
                                                                          "qa_unknown_heldout"}  # fmt: skip
    for name, answers in latest["sets"].items():
        assert answers == expected[name]["answers"]


def test_one_generation_over_every_set_scores_each_as_alone(base, bf16_trainer):
    saved, tokenizer = reloaded(bf16_trainer, Path(bf16_trainer.args.output_dir) / "alone")
    sets = bf16_trainer.factuality_sets
    together = score_question_sets(saved, tokenizer, sets, bf16_trainer.args)
    for name, questions in sets.items():
        alone = score_questions(saved, tokenizer, questions, batch_size=len(questions))
        assert [a["prediction"] for a in together[name]["answers"]] == [a["prediction"] for a in alone["answers"]]
        assert [a["confidence"] for a in together[name]["answers"]] == pytest.approx(
            [a["confidence"] for a in alone["answers"]], abs=1e-5
        )
        assert together[name]["metrics"] == pytest.approx(alone["metrics"], nan_ok=True, abs=1e-5)


def test_without_a_bfloat16_lstm_kernel_the_recurrence_runs_in_float32_under_cpu_autocast(monkeypatch):
    # oneDNN builds no LSTM for autocast's bfloat16 below AVX-512 (it raised on an AVX2 CPU); the layer then runs in
    # float32 and gives exactly the float32 result. Forced here, so that it is checked on every CPU.
    monkeypatch.setattr(modeling_lstm, "cpu_autocast_lstm_runs", lambda: False)
    torch.manual_seed(0)
    layer = modeling_lstm.LSTMLayer(8, 16)
    inputs, h0, c0 = torch.randn(2, 5, 8), torch.randn(1, 2, 16), torch.randn(1, 2, 16)  # two distinct rows
    expected, (h, c) = layer(inputs, (h0, c0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, (autocast_h, autocast_c) = layer(inputs, (h0, c0))
    assert output.dtype == torch.float32 and not torch.equal(output[0], output[1])
    assert torch.equal(output, expected) and torch.equal(autocast_h, h) and torch.equal(autocast_c, c)
