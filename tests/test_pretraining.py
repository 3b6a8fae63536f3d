"""Pre-training with the real Trainer, in one process and under `accelerate launch` with two (gloo on the CPU)."""

import json
import math
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from helpers import CORPUS, accelerate_launch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, TrainingArguments

from modeling import LSTMForCausalLM, LSTMTokenizer, train_tokenizer
from modeling.checkpoints import load_model_and_tokenizer, save_atomically
from modeling.run_config import parse_run_config
from modeling.training.pretraining import DEFAULTS, PretrainArguments, build_model, pretrain
from modeling.world import PRETRAIN_SPLIT, load_world, load_world_datasets

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "tiny.yaml")
TINY_GPT2 = str(REPO / "configs" / "study" / "tiny_gpt2.yaml")


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


@pytest.mark.learns
def test_pretraining_learns_from_the_context_and_writes_a_loadable_model(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    model, tokenizer = load_model_and_tokenizer(tiny_run / "model")
    # The targets the loss is taken over: every token after the first of each eos-ended biography.
    texts = load_world_datasets(tiny_run / "world")[PRETRAIN_SPLIT]["text"]
    targets = [(ids + [tokenizer.eos_token_id])[1:] for ids in tokenizer(list(texts))["input_ids"]]
    entropy = unigram_entropy(targets)  # 4.04 nats; uniform over the vocabulary would be ln 300 = 5.70
    assert metrics["eval_loss"] < 0.95 * entropy, (metrics["eval_loss"], entropy)
    assert isinstance(model, LSTMForCausalLM) and model.config.hidden_size == 64
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


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory) -> Path:
    """Pre-training on a corpus of the user's: a .txt file of blank-line blocks and a JSON Lines file."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "notes.txt").write_text("\n\n".join(CORPUS[:40]))
    (root / "more.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in CORPUS[40:]))
    out = root / "run"
    argv = ["--train_files", str(root / "notes.txt"), str(root / "more.jsonl"), "--vocab_size", "300"]
    argv += ["--embedding_dim", "32", "--hidden_size", "32", "--num_layers", "1", "--eval_fraction", "0.1"]
    argv += ["--num_train_epochs", "6", "--learning_rate", "0.03", "--lr_scheduler_type", "constant"]
    pretrain(*parse(*argv, "--output_dir", str(out), "--per_device_train_batch_size", "4"))
    return out


@pytest.mark.learns
def test_pretraining_on_a_corpus_of_ones_own(corpus_run):
    metrics = json.loads((corpus_run / "metrics.json").read_text())
    model, tokenizer = load_model_and_tokenizer(corpus_run / "model")
    # The tokenizer was trained on the corpus: its merges make whole words of it.
    assert tokenizer.convert_ids_to_tokens(tokenizer(" Lovelace")["input_ids"]) == ["ĠLovelace"]
    assert len(tokenizer) == model.config.vocab_size <= 300
    # 100 documents, 10 held out: the perplexity of those (the corpus repeats, so they are learnable).
    targets = [(ids + [tokenizer.eos_token_id])[1:] for ids in tokenizer(CORPUS)["input_ids"]]
    assert metrics["eval_loss"] < 0.5 * unigram_entropy(targets), metrics
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(metrics["eval_loss"]))
    assert metrics["num_processes"] == 1
    assert not (corpus_run / "biographies.json").exists() and not (corpus_run / "world").exists()
    log_history = json.loads((corpus_run / "log_history.json").read_text())["log_history"]
    assert log_history[-1]["eval_loss"] == metrics["eval_loss"]
    recorded = yaml.safe_load((corpus_run / "run_config.yaml").read_text())["PretrainArguments"]
    assert recorded["train_files"][1].endswith("more.jsonl")
    assert recorded["num_threads"] == int(os.environ["OMP_NUM_THREADS"])  # as set (conftest: 1), and recorded


def test_a_finished_run_is_not_overwritten_unless_asked(corpus_run, tmp_path):
    before = {p: p.read_bytes() for p in corpus_run.rglob("*") if p.is_file()}
    args = parse("--train_files", str(corpus_run.parent / "notes.txt"), "--output_dir", str(corpus_run))
    with pytest.raises(FileExistsError, match="holds a finished run"):
        pretrain(*args)
    assert {p: p.read_bytes() for p in corpus_run.rglob("*") if p.is_file()} == before


def test_an_overwriting_run_deletes_the_finished_one_before_it_writes(corpus_run, tmp_path):
    """With --overwrite_output_dir the old run goes first, marker first: a run that then fails leaves no folder that
    reads as finished, and no file of the old run beside the new run's."""
    folder = shutil.copytree(corpus_run, tmp_path / "run")
    args = parse("--train_files", str(tmp_path / "missing.txt"), "--output_dir", str(folder))
    args[0].overwrite_output_dir = True
    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        pretrain(*args)
    assert not folder.exists()


def test_overwriting_a_run_that_holds_the_inputs_is_refused(corpus_run, tmp_path):
    folder = shutil.copytree(corpus_run, tmp_path / "run")
    args = parse("--model_dir", str(folder / "model"), "--train_files", str(corpus_run.parent / "notes.txt"))
    args[0].overwrite_output_dir, args[1].output_dir = True, str(folder)
    with pytest.raises(ValueError, match="would delete .*run, which holds this run's input .*model"):
        pretrain(*args)
    assert (folder / "metrics.json").is_file()


@pytest.mark.parametrize(
    "fraction, message",
    [(0.0, "eval_fraction must be between 0 and 1"), (0.5, "holds out 1 and leaves none to train on")],
)
def test_a_held_out_slice_that_leaves_nothing_to_train_on_is_refused(tmp_path, fraction, message):
    (tmp_path / "one.txt").write_text("A single document.")
    args = ["--train_files", str(tmp_path / "one.txt"), "--eval_fraction", str(fraction)]
    with pytest.raises(ValueError, match=message):
        pretrain(*parse(*args, "--output_dir", str(tmp_path / "run")))


def test_continuing_a_model_with_a_tokenizer_that_does_not_fit_stops_before_training(corpus_run, tmp_path):
    other = tmp_path / "other_tokenizer"
    train_tokenizer(CORPUS, vocab_size=400).save_pretrained(other)  # more tokens than the model embeds
    argv = ["--train_files", str(corpus_run.parent / "notes.txt"), "--model_dir", str(corpus_run / "model")]
    with pytest.raises(ValueError, match="has 3.. tokens but the model's vocab_size is"):
        pretrain(*parse(*argv, "--tokenizer_dir", str(other), "--output_dir", str(tmp_path / "run")))
    assert not (tmp_path / "run" / "model").exists()


def test_continued_pretraining_uses_the_models_tokenizer_and_weights(corpus_run, tmp_path):
    argv = ["--train_files", str(corpus_run.parent / "more.jsonl"), "--model_dir", str(corpus_run / "model")]
    argv += ["--num_train_epochs", "1", "--learning_rate", "0", "--eval_fraction", "0.2"]
    pretrain(*parse(*argv, "--output_dir", str(tmp_path / "run")))
    before, _ = load_model_and_tokenizer(corpus_run / "model")
    after, tokenizer = load_model_and_tokenizer(tmp_path / "run" / "model")
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(corpus_run / "model").get_vocab()
    for name, weight in before.state_dict().items():  # a learning rate of 0 leaves every weight as loaded
        assert torch.equal(weight, after.state_dict()[name]), name


def test_train_files_and_a_world_are_one_or_the_other(tmp_path):
    with pytest.raises(ValueError, match="train_files .* or world_dir .*, not both"):
        pretrain(*parse("--train_files", "x.txt", "--world_dir", "w", "--output_dir", str(tmp_path)))


def test_accelerate_launch_trains_on_two_processes(tmp_path):
    out = tmp_path / "run"
    script = [str(REPO / "scripts" / "pretrain.py"), TINY, "--output_dir", str(out), "--num_train_epochs", "1"]
    result = accelerate_launch(*script, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Both processes report the global batch: 4 sequences x 2 processes.
    assert result.stdout.count("8 sequences per step") == 2
    assert result.stdout.count("pretrain: wrote") == 1  # only the main process writes
    model, _ = load_model_and_tokenizer(out / "model")
    assert (model.config.num_layers, model.config.hidden_size) == (1, 64)  # configs/tiny.yaml


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


@pytest.fixture(scope="module")
def tiny_gpt2_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain_gpt2")
    pretrain(*parse(TINY_GPT2, "--output_dir", str(out), "--num_train_epochs", "5"))
    return out


@pytest.mark.learns
def test_a_transformer_built_from_scratch_pretrains_and_loads_through_the_auto_classes(tiny_gpt2_run):
    metrics = json.loads((tiny_gpt2_run / "metrics.json").read_text())
    model, tokenizer = load_model_and_tokenizer(tiny_gpt2_run / "model")
    assert type(model) is GPT2LMHeadModel and type(tokenizer) is LSTMTokenizer
    # The sizes of the config file, under gpt2's own names; the tokenizer's vocabulary and special tokens.
    config = model.config
    assert (config.n_embd, config.n_layer, config.n_head, config.n_positions) == (24, 2, 2, 256)
    assert (config.embd_pdrop, config.resid_pdrop, config.attn_pdrop) == (0.0, 0.0, 0.0)  # dropout: 0.0
    assert config.vocab_size == len(tokenizer) == 300
    ids = (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id) == ids
    texts = load_world_datasets(tiny_gpt2_run / "world")[PRETRAIN_SPLIT]["text"]
    targets = [(ids + [tokenizer.eos_token_id])[1:] for ids in tokenizer(list(texts))["input_ids"]]
    assert metrics["eval_loss"] < 0.9 * unigram_entropy(targets), metrics["eval_loss"]
    biographies = json.loads((tiny_gpt2_run / "biographies.json").read_text())["biographies"]
    assert biographies and all(b["text"].startswith(b["name"]) for b in biographies)
    recorded = yaml.safe_load((tiny_gpt2_run / "run_config.yaml").read_text())["PretrainArguments"]
    assert recorded["model_type"] == "gpt2"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--model_type", "gpt3"], "model_type 'gpt3' is neither 'lstm' nor a model type transformers knows"),
        (["--model_type", "t5"], "model_type 't5' is not a causal language model"),
        (["--model_type", "gpt2", "--hidden_size", "30"], "hidden_size 30 must be divisible by num_attention_heads 4"),
        (
            ["--model_type", "gpt2", "--max_position_embeddings", "128"],
            r"max_length \(the longest training sequence\) is 256 tokens, longer than the 128 positions",
        ),
    ],
    ids=["unknown-type", "not-causal", "heads-do-not-divide", "too-few-positions"],
)
def test_a_model_transformers_cannot_build_is_refused(tokenizer, flags, message):
    with pytest.raises(ValueError, match=message):
        build_model(parse(*flags)[0], tokenizer)


def test_biographies_longer_than_a_transformer_reads_stop_pretraining_before_training(tmp_path):
    flags = ["--max_length", "64", "--max_position_embeddings", "64", "--biography_max_new_tokens", "64"]
    message = (
        r"a biography \(the longest name and biography_max_new_tokens\) is \d+ tokens, longer than the 64 positions"
    )
    with pytest.raises(ValueError, match=message):
        pretrain(*parse(TINY_GPT2, *flags, "--output_dir", str(tmp_path / "run")))
    assert not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize("model_type", ["lstm", "gpt2"])
def test_build_model_makes_the_model_type_sized_by_the_arguments(tokenizer, model_type):
    args = parse("--model_type", model_type, "--hidden_size", "32", "--num_layers", "2", "--embedding_dim", "16")[0]
    model = build_model(args, tokenizer)
    expected = LSTMForCausalLM if model_type == "lstm" else GPT2LMHeadModel
    assert type(model) is expected
    # The generic names reach either architecture (gpt2 answers to them through its attribute_map).
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 2)
    assert model.config.vocab_size == len(tokenizer)
    if model_type == "gpt2":
        assert (model.config.n_head, model.config.n_positions) == (4, 512)


def test_continuing_a_transformer_whose_saved_tokenizer_does_not_fit_is_refused(tmp_path, tokenizer):
    """Our LSTM checks the tokenizer saved with it as it loads; a gpt2 loads without a look, so pre-training does."""
    model = build_model(parse("--model_type", "gpt2", "--hidden_size", "16", "--num_layers", "1")[0], tokenizer)
    save_atomically(tmp_path / "model", model, train_tokenizer(CORPUS, vocab_size=400))
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "model")) is GPT2LMHeadModel  # loads as it is
    with pytest.raises(ValueError, match="has 3.. tokens but the model's vocab_size is 320"):
        build_model(parse("--model_dir", str(tmp_path / "model"))[0], tokenizer)
