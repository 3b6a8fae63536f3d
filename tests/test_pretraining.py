"""Pre-training with the real Trainer, in one process and under `accelerate launch` with two (gloo on the CPU)."""

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import accelerate_launch
from transformers import TrainingArguments

from modeling import LSTMForCausalLM
from modeling.checkpoints import load_model_and_tokenizer, save_atomically
from modeling.pretraining import DEFAULTS, PretrainArguments, build_examples, pretrain
from modeling.run_config import parse_run_config
from modeling.world import PRETRAIN_SPLIT, load_world, load_world_datasets

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")


def parse(*argv: str) -> tuple[PretrainArguments, TrainingArguments]:
    return parse_run_config((PretrainArguments, TrainingArguments), list(argv), DEFAULTS)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    pretrain(*parse(TINY, "--output_dir", str(out), "--num_train_epochs", "8"))
    return out


def unigram_entropy(token_ids: list[list[int]]) -> float:
    """Entropy in nats of the token frequencies: the loss of the best model that ignores the context."""
    counts = Counter(token for ids in token_ids for token in ids)
    total = sum(counts.values())
    return -sum(count / total * math.log(count / total) for count in counts.values())


def test_pretraining_learns_from_the_context_and_writes_a_loadable_model(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    model, tokenizer = load_model_and_tokenizer(tiny_run / "model")
    # The targets the loss is taken over: every token after the first of each eos-ended biography.
    texts = load_world_datasets(tiny_run / "world")[PRETRAIN_SPLIT]["text"]
    targets = [(ids + [tokenizer.eos_token_id])[1:] for ids in tokenizer(list(texts))["input_ids"]]
    entropy = unigram_entropy(targets)  # 4.04 nats; uniform over the vocabulary would be ln 300 = 5.70
    assert metrics["eval_loss"] < 0.95 * entropy, (metrics["eval_loss"], entropy)
    assert isinstance(model, LSTMForCausalLM) and model.config.hidden_size == 32
    assert (tiny_run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    biographies = json.loads((tiny_run / "biographies.json").read_text())
    known = [p for p in load_world(tiny_run / "world").people if p.group == "known"]
    assert [b["name"] for b in biographies["biographies"]] == [p.name for p in known]
    assert all(b["text"].startswith(b["name"]) for b in biographies["biographies"])
    assert metrics["biography_coverage"] == biographies["metrics"]["coverage"]
    assert 0.0 <= metrics["biography_claim_precision"] <= 1.0


def test_run_records_the_config_it_used(tiny_run):
    recorded = yaml.safe_load((tiny_run / "run_config.yaml").read_text())
    assert recorded["PretrainArguments"]["num_people"] == 40  # from the file
    assert recorded["TrainingArguments"]["num_train_epochs"] == 8  # from the flag, over the file
    assert recorded["TrainingArguments"]["weight_decay"] == 0.01  # from the embedded default


@pytest.mark.parametrize("where", ["file", "flag"])
def test_unknown_config_keys_are_an_error(tmp_path, where):
    if where == "file":
        bad = tmp_path / "bad.yaml"
        bad.write_text("num_people: 10\nnum_peeple: 20\n")
        with pytest.raises(ValueError, match=r"Unknown configuration keys \['num_peeple'\]"):
            parse(str(bad))
    else:
        with pytest.raises(ValueError, match="num_peeple"):
            parse("--num_peeple", "20")


def test_build_examples_gives_one_eos_ended_sequence_per_document(tokenizer):
    texts = ["Ada was born in London.", "Alan studied at King's College."]
    examples = build_examples(texts, tokenizer, max_length=64)
    assert examples["input_ids"] == [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in texts]
    assert [len(ids) for ids in build_examples(texts, tokenizer, max_length=3)["input_ids"]] == [3, 3]
    with pytest.raises(ValueError, match="corpus is empty"):
        build_examples([], tokenizer, 4)


def test_accelerate_launch_trains_on_two_processes(tmp_path):
    out = tmp_path / "run"
    script = [str(REPO / "scripts" / "pretrain.py"), TINY, "--output_dir", str(out), "--num_train_epochs", "1"]
    result = accelerate_launch(*script, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Both processes report the global batch: 4 sequences x 2 processes.
    assert result.stdout.count("8 sequences per step") == 2
    assert result.stdout.count("pretrain: wrote") == 1  # only the main process writes
    model, _ = load_model_and_tokenizer(out / "model")
    assert model.config.num_layers == 2


class ExplodingModel(LSTMForCausalLM):
    def save_pretrained(self, save_directory, **kwargs):
        super().save_pretrained(save_directory, **kwargs)
        raise RuntimeError("disk full")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, model, tokenizer):
    target = save_atomically(tmp_path / "model", model, tokenizer)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    broken = ExplodingModel(model.config)
    with pytest.raises(RuntimeError, match="disk full"):
        save_atomically(target, broken, tokenizer)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind
