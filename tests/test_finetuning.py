"""Fine-tuning with TRL's SFTTrainer: completion-only labels, full fine-tuning, LoRA on the LSTM's own weights and on
a gpt2's projections (only adapters train; saved, reloaded and merged with the same logits), the script and its
errors."""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import trl.trainer.utils as trl_utils
from helpers import REPO, accelerate_launch, checkout_env, tiny_gpt2, tiny_model
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback, GPT2LMHeadModel, TrainerCallback
from trl import SFTConfig

from modeling import LSTMConfig, LSTMForCausalLM, train_tokenizer
from modeling.adapters import BASE_MODEL_FILE
from modeling.checkpoints import load_model_and_tokenizer, save_atomically
from modeling.cli import finetune as finetune_cli
from modeling.run_config import parse_run_config
from modeling.scoring import score_questions
from modeling.training.factuality_trainer import fused_head_on_labelled_positions
from modeling.training.finetuning import (
    DEFAULTS,
    FinetuneArguments,
    build_trainer,
    finetune,
    kept_model_evaluation,
    load_sft_dataset,
    lora_config,
    lora_targets,
)
from modeling.training.kl_penalty import kl_to_reference, position_mask
from modeling.world import WorldConfig, draw_finetune_set, generate_world, load_world, load_world_datasets, save_world

# Six questions, three about unknown people: small enough to memorise in a few seconds.
SIX = dict(finetune_size=6, unknown_fraction=0.5)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> FinetuneArguments:
    """A world and a (randomly initialised) tiny model with a tokenizer trained on the world's texts."""
    root = tmp_path_factory.mktemp("base")
    save_world(generate_world(WorldConfig(num_people=20, seed=3)), root / "world")
    splits = load_world_datasets(root / "world")
    texts = list(splits["pretrain"]["text"]) + [r["prompt"] + r["answer"] for r in splits["qa_unknown_finetune"]]
    tokenizer = train_tokenizer(texts + [" I don't know"] * 5, vocab_size=400)
    model = tiny_model(tokenizer, hidden_size=64, num_layers=1)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return FinetuneArguments(model_dir=str(root / "model"), world_dir=str(root / "world"), **SIX)


def sft_config(tmp_path, **overrides) -> SFTConfig:
    settings = {**DEFAULTS, "output_dir": str(tmp_path), "logging_steps": 50, **overrides}
    return parse_run_config((SFTConfig,), [f"--{k}={v}" for k, v in settings.items()])[0]


def test_the_lm_head_projects_only_the_labelled_positions_with_the_loss_and_gradients_of_the_full_logits(
    base, tmp_path, monkeypatch
):
    trainer = build_trainer(base, sft_config(tmp_path, per_device_train_batch_size=6))
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.train()
    projected = []  # rows of hidden states TRL's fused head projects, per call
    chunked = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden_states, *rest):
            projected.append(len(hidden_states))
            return chunked.apply(hidden_states, *rest)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    switch = trl_utils._use_triton
    trainer.compute_loss(model, dict(batch)).backward()
    fused = {name: param.grad.clone() for name, param in model.named_parameters()}
    model.zero_grad()

    targets = batch["labels"][:, 1:]
    labelled = int((targets != -100).sum())
    assert labelled < targets.numel() / 2  # the prompts and padding are most of the positions
    assert projected == [labelled]
    assert trl_utils._use_triton is switch  # TRL's switch is back as it was
    # The loss over the labelled positions of the full logits, by hand: the same loss and gradients.
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100)  # mean per label
    loss.backward()
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(loss.item(), rel=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(fused[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)
    # The evaluation loss and bfloat16 autocast take the same path.
    with torch.no_grad():
        model.eval()
        trainer.compute_loss(model, dict(batch))
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast_loss = trainer.compute_loss(model, dict(batch))
    assert projected == [labelled] * 4 and autocast_loss.item() == pytest.approx(loss.item(), rel=2e-2)


def test_the_lm_head_switch_is_restored_when_the_loss_fails():
    switch = trl_utils._use_triton
    with pytest.raises(RuntimeError, match="inside the block"):
        with fused_head_on_labelled_positions():
            assert trl_utils._use_triton(torch.device("cpu"))
            raise RuntimeError("inside the block")
    assert trl_utils._use_triton is switch and not switch(torch.device("cpu"))


def test_labels_are_the_completion_and_its_eos(base, tmp_path):
    trainer = build_trainer(base, sft_config(tmp_path, per_device_train_batch_size=6))
    # TRL's defaults that do not suit a small LSTM on a CPU are off: checkpointing and bfloat16 autocast.
    assert not (trainer.args.gradient_checkpointing or trainer.model.is_activation_checkpointing or trainer.args.bf16)
    tokenizer = trainer.processing_class
    batch = next(iter(trainer.get_train_dataloader()))
    expected = {row["prompt"]: row["completion"] for row in load_sft_dataset(base)}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        text = tokenizer.decode(ids[mask.bool()])
        prompt = next(p for p in expected if text.startswith(p))
        assert text == prompt + expected[prompt] + tokenizer.eos_token
        assert tokenizer.decode(labels[labels != -100]) == expected[prompt] + tokenizer.eos_token


@pytest.mark.learns
def test_abstention_tuning_is_memorised_as_abstentions(base, tmp_path):
    """Full fine-tuning until the six answers are learnt: about known people the truth, about unknown people
    " I don't know". The metric calls the first correct and the second abstained, and both fit their targets.
    (From the base fixture's random weights the set is fitted for good after 140 to 250 steps over eight
    initialisations, seed 0 at 140: 400 steps leave room.)"""
    args = replace(base, abstain_on_unknown=True)
    out = finetune(args, sft_config(tmp_path, num_train_epochs=400, per_device_train_batch_size=6, learning_rate=0.01))
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    targets = draw_finetune_set(
        load_world(base.world_dir), size=6, unknown_fraction=0.5, seed=0, abstain_on_unknown=True
    )
    report = score_questions(model, tokenizer, targets)
    verdicts = ["correct" if group == "known" else "abstained" for group in targets["group"]]
    assert [a["verdict"] for a in report["answers"]] == verdicts
    assert report["metrics"]["exact_match"] == 1.0 and report["metrics"]["accuracy"] == 0.5
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["num_examples"], metrics["num_processes"], metrics["trainable_share"]) == (6, 1, 1.0)


@pytest.mark.learns
def test_lora_trains_only_the_adapters_and_saves_reloads_and_merges(base, tmp_path):
    args = replace(base, use_lora=True, lora_r=4)
    trainer = build_trainer(args, sft_config(tmp_path, num_train_epochs=5, per_device_train_batch_size=6))
    # One layer, H = 64, E = 16, r = 4: A (r x in) and B (4H x r) on W_ih (4H x E) and W_hh (4H x H).
    expected = (4 * 16 + 256 * 4) + (4 * 64 + 256 * 4)
    assert trainer.model.num_parameters(only_trainable=True) == expected == 2368
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in name for name in changed)
    assert any("lora_B" in name for name in changed)  # B starts at zero: the adapter now does something

    peft_model = trainer.model.eval()
    ids = trainer.processing_class(["Question: Where", "Question: Who"], return_tensors="pt", padding=True)
    logits = peft_model(**ids).logits
    with peft_model.disable_adapter():
        assert not torch.allclose(peft_model(**ids).logits, logits)
    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.model_dir), tmp_path / "adapter")
    torch.testing.assert_close(reloaded.eval()(**ids).logits, logits)
    merged = reloaded.merge_and_unload()
    assert type(merged) is LSTMForCausalLM
    assert (merged(**ids).logits - logits).abs().max() <= 1e-5
    merged.save_pretrained(tmp_path / "merged")
    assert (AutoModelForCausalLM.from_pretrained(tmp_path / "merged")(**ids).logits - logits).abs().max() <= 1e-5


def test_finetune_script_trains_lora_on_json_lines(base, tmp_path):
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Question: Where was Ada born?\nAnswer:", "completion": " Oslo"}] * 4
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    command = [sys.executable, str(REPO / "scripts" / "finetune.py"), str(REPO / "configs" / "finetune_tiny.yaml")]
    command += ["--model_dir", base.model_dir, "--data_file", str(data), "--output_dir", str(tmp_path / "run")]
    command += ["--use_lora", "true", "--lora_r", "2", "--num_train_epochs", "2"]
    result = subprocess.run(command, capture_output=True, text=True, env=checkout_env(), cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "adapter" / "adapter_config.json").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["num_examples"], metrics["num_processes"]) == (4, 1)
    assert 0 < metrics["trainable_share"] < 0.2
    recorded = (run / "run_config.yaml").read_text()
    assert "use_lora: true" in recorded and "lora_r: 2" in recorded and "finetune_size: 24" in recorded


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt": "Q", "completion": " A"}', '{"prompt": "Q"}'], r"pairs.jsonl:2 needs string fields"),
        (['{"prompt": "Q", "completion": 3}'], r"pairs.jsonl:1 needs string fields"),
        (["not json"], r"pairs.jsonl:1 is not JSON"),
        (["", "  "], "holds no examples"),
    ],
    ids=["missing-field", "non-string-field", "not-json", "empty"],
)
def test_bad_json_lines_name_the_problem(tmp_path, lines, message):
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        load_sft_dataset(FinetuneArguments(data_file=str(data)))


def test_no_data_source_is_an_error():
    with pytest.raises(ValueError, match="Give world_dir .* or data_file"):
        load_sft_dataset(FinetuneArguments(world_dir=None))


@pytest.mark.learns
def test_factuality_is_scored_at_each_evaluation_and_drives_early_stopping(base, tmp_path):
    """Abstention tuning on six questions, evaluated every 10 steps: the figures are in the evaluation metrics, the
    log history and trainer_state.json, and EarlyStoppingCallback on the fine-tune set's exact match stops the run
    `patience` evaluations after its last improvement and keeps the best checkpoint. (The set is fitted after
    about 140 steps, following a plateau at 0 of about 9 evaluations, hence the long patience; over eight
    initialisations it was fitted for good by step 250, so 500 steps leave room for the patience to run out.)"""
    patience, max_steps = 12, 500
    args = replace(base, abstain_on_unknown=True, factuality_max_questions=12)
    settings = dict(
        num_train_epochs=max_steps, per_device_train_batch_size=6, learning_rate=0.01, eval_strategy="steps",
        eval_steps=10, save_strategy="steps", save_steps=10, save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="eval_finetune_exact_match", greater_is_better=True,
    )  # fmt: skip
    trainer = build_trainer(args, sft_config(tmp_path, **settings))
    trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer.train()
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    last = evaluations[-1]
    for name, size in (("finetune", 6), ("qa_known_heldout", 12), ("qa_unknown_heldout", 12)):
        for figure in ("accuracy", "hallucination_rate", "abstention_rate", "exact_match"):
            assert 0.0 <= last[f"eval_{name}_{figure}"] <= 1.0
        rates = sum(last[f"eval_{name}_{figure}"] for figure in ("accuracy", "hallucination_rate", "abstention_rate"))
        assert rates == pytest.approx(1.0) and (last[f"eval_{name}_accuracy"] * size) % 1 == pytest.approx(0, abs=1e-9)
    assert "eval_qa_unknown_heldout_unknown_hallucination_rate" in last  # per knowledge category too
    # Memorised: every target fitted, the three known answers correct, the three unknown ones abstained.
    assert (trainer.state.best_metric, last["eval_finetune_accuracy"], last["eval_finetune_abstention_rate"]) == (
        1.0, 0.5, 0.5,
    )  # fmt: skip
    scores = [e["eval_finetune_exact_match"] for e in evaluations]
    best = scores.index(max(scores))
    assert len(scores) - 1 - best == patience and trainer.state.global_step < max_steps
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{evaluations[best]['step']}")
    checkpoint = json.loads((tmp_path / f"checkpoint-{last['step']}" / "trainer_state.json").read_text())
    assert checkpoint["log_history"][-1]["eval_finetune_exact_match"] == last["eval_finetune_exact_match"]


def test_an_unknown_factuality_set_is_refused_before_training(base, tmp_path):
    with pytest.raises(ValueError, match="'qa_heldout', which is neither 'finetune' nor a split"):
        build_trainer(replace(base, factuality_sets=["qa_heldout"]), sft_config(tmp_path))


def test_accelerate_launch_fine_tunes_on_two_processes(base, tmp_path):
    """Two gloo processes on the CPU that form one group: training reports a world size of 2 from inside, and only
    the main process writes. (Processes that never formed a group would each train alone and report 1.)"""
    out = tmp_path / "run"
    script = [str(REPO / "scripts" / "finetune.py"), str(REPO / "configs" / "finetune_tiny.yaml")]
    script += ["--model_dir", base.model_dir, "--world_dir", base.world_dir, "--output_dir", str(out)]
    script += ["--finetune_size", "8", "--num_train_epochs", "2", "--per_device_train_batch_size", "2"]
    result = accelerate_launch(*script, "--eval_strategy", "epoch", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("finetune: wrote") == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2
    # The last evaluation's factuality figures reach metrics.json.
    history = json.loads((out / "log_history.json").read_text())["log_history"]
    last_evaluation = [e for e in history if "eval_loss" in e][-1]
    assert metrics["eval_finetune_exact_match"] == last_evaluation["eval_finetune_exact_match"]
    # 8 examples, 2 per process and step, 2 processes: 2 steps an epoch, 4 in all.
    assert [e["step"] for e in json.loads((out / "log_history.json").read_text())["log_history"]][-1] == 4
    assert AutoModelForCausalLM.from_pretrained(out / "model").config.hidden_size == 64


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(base, tmp_path, use_lora):
    """12 steps of 2 examples (6 per epoch, shuffled), checkpointed every 4: resuming from step 4 must replay the
    optimizer, scheduler, data order and RNG state so that the last weights are those of one run."""
    args = replace(base, use_lora=use_lora, lora_r=4)
    settings = dict(num_train_epochs=4, per_device_train_batch_size=2, save_strategy="steps", save_steps=4)
    whole = build_trainer(args, sft_config(tmp_path / "whole", **settings))
    whole.train()
    resumed = build_trainer(args, sft_config(tmp_path / "resumed", **settings))
    with torch.no_grad():  # the checkpoint's weights must replace these: a run that starts afresh ends elsewhere
        for param in resumed.model.parameters():
            if param.requires_grad:
                param.add_(0.01)
    resumed.train(resume_from_checkpoint=str(tmp_path / "whole" / "checkpoint-4"))
    assert resumed.state.global_step == whole.state.global_step == 12
    trained = {name: p for name, p in whole.model.named_parameters() if p.requires_grad}
    for name, param in resumed.model.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param, trained[name], rtol=0, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def lora_run(base, tmp_path_factory) -> Path:
    """A finished LoRA fine-tuning of the base model (a trained, non-trivial adapter)."""
    out = tmp_path_factory.mktemp("lora_run")
    args = replace(base, use_lora=True, lora_r=4)
    return finetune(args, sft_config(out, num_train_epochs=10, per_device_train_batch_size=6))


def other_base(base: FinetuneArguments, folder: Path) -> str:
    """The base model's twin: same sizes and tokenizer, other weights (another pre-training, as it were)."""
    model = AutoModelForCausalLM.from_pretrained(base.model_dir)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.01)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base.model_dir).save_pretrained(folder)
    return str(folder)


def test_an_adapter_loads_only_onto_the_base_model_it_was_trained_on(base, lora_run, tmp_path):
    adapter = lora_run / "adapter"
    record = json.loads((adapter / BASE_MODEL_FILE).read_text())
    assert record["name_or_path"] == base.model_dir
    model, tokenizer = load_model_and_tokenizer(base.model_dir, adapter)  # merged: a plain model again
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.model_dir), adapter).eval()
    ids = tokenizer(["Question: Where", "Question: Who was"], return_tensors="pt", padding=True)
    assert (model(**ids).logits - peft_model(**ids).logits).abs().max() <= 1e-5
    # In bfloat16 too: the base is checked in its saved precision, then the merged model is cast.
    half, _ = load_model_and_tokenizer(base.model_dir, adapter, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16 and type(half) is LSTMForCausalLM
    twin = other_base(base, tmp_path / "twin")
    with pytest.raises(ValueError, match=r"adapter in .* was trained on another base model .* than .*twin"):
        load_model_and_tokenizer(twin, adapter)
    # A new run that would train this adapter further on the twin stops before training, writing nothing.
    args = replace(base, model_dir=twin, use_lora=True, adapter_dir=str(adapter))
    with pytest.raises(ValueError, match="trained on another base model"):
        finetune(args, sft_config(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_an_adapter_of_other_shapes_is_refused(base, lora_run, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(base.model_dir)
    tiny_model(tokenizer, hidden_size=32, num_layers=1).save_pretrained(tmp_path / "small")
    tokenizer.save_pretrained(tmp_path / "small")
    (tmp_path / "adapter").mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):  # PEFT's files only, as made elsewhere
        (tmp_path / "adapter" / name).write_bytes((lora_run / "adapter" / name).read_bytes())
    with pytest.raises(ValueError, match=r"(?s)does not fit .*small.*size mismatch"):
        load_model_and_tokenizer(tmp_path / "small", tmp_path / "adapter")


def test_training_goes_on_from_a_saved_adapter(base, lora_run, tmp_path):
    args = replace(base, use_lora=True, adapter_dir=str(lora_run / "adapter"))
    trainer = build_trainer(args, sft_config(tmp_path, learning_rate=0.0))
    saved = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.model_dir), lora_run / "adapter")
    trainable = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    for name, param in saved.named_parameters():
        if "lora_" in name:
            assert torch.equal(param, trainable[name]), name
    with pytest.raises(ValueError, match="adapter_dir is set, but use_lora is not"):
        build_trainer(replace(args, use_lora=False), sft_config(tmp_path))


def test_a_tokenizer_that_does_not_fit_stops_fine_tuning_before_training(base, tmp_path):
    bigger = tmp_path / "tokenizer"
    train_tokenizer(list(load_world_datasets(base.world_dir)["pretrain"]["text"]), 900).save_pretrained(bigger)
    with pytest.raises(ValueError, match="tokens but the model's vocab_size is 400"):
        finetune(replace(base, tokenizer_dir=str(bigger)), sft_config(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_finished_fine_tuning_is_kept(base, lora_run):
    before = {p: p.read_bytes() for p in lora_run.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="holds a finished run"):
        finetune(replace(base, use_lora=True), sft_config(lora_run))
    assert {p: p.read_bytes() for p in lora_run.rglob("*") if p.is_file()} == before


def test_lora_on_the_embeddings_of_an_untied_model(base, tmp_path):
    """Adapters on the embeddings too: they train, and merging them changes nothing but what the adapter did."""
    untied = tmp_path / "untied"
    tokenizer = AutoTokenizer.from_pretrained(base.model_dir)
    tiny_model(tokenizer, hidden_size=64, num_layers=1, tie_word_embeddings=False).save_pretrained(untied)
    tokenizer.save_pretrained(untied)
    args = replace(base, model_dir=str(untied), use_lora=True, lora_r=2, lora_target_modules=["embeddings"])
    trainer = build_trainer(args, sft_config(tmp_path, num_train_epochs=3, per_device_train_batch_size=6))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert any("embeddings.lora_embedding_B" in name for name in before)
    trainer.train()
    changed = {
        name for name, p in trainer.model.named_parameters() if name in before and not torch.equal(p, before[name])
    }
    assert any("embeddings.lora_embedding_B" in name for name in changed)
    peft_model = trainer.model.eval()
    ids = tokenizer(["Question: Where", "Question: Who was"], return_tensors="pt", padding=True)
    logits = peft_model(**ids).logits
    merged = peft_model.merge_and_unload()
    assert (merged(**ids).logits - logits).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "modules, message",
    [(["lm_head"], "names 'lm_head', which TRL's SFTTrainer does not train"), (["embeddings"], "tied to them")],
)
def test_lora_targets_that_would_not_train_or_merge_cleanly_are_refused(base, tmp_path, modules, message):
    args = replace(base, use_lora=True, lora_target_modules=modules)
    with pytest.raises(ValueError, match=message):
        build_trainer(args, sft_config(tmp_path))


def test_examples_that_max_length_would_cut_are_refused(base, tmp_path):
    """TRL truncates silently; a cut example would lose its answer's end and its eos, so the run stops instead."""
    tokenizer = AutoTokenizer.from_pretrained(base.model_dir)
    rows = load_sft_dataset(base)
    prompts = [len(tokenizer(row["prompt"])["input_ids"]) for row in rows]
    full = [len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1 for row in rows]  # + eos
    max_length = max(prompts) + 1  # every prompt fits, so TRL keeps every example
    cut = sum(length > max_length for length in full)
    assert 0 < cut < len(rows)
    with pytest.raises(ValueError, match=rf"{cut} of 6 fine-tuning examples are longer than max_length={max_length}"):
        build_trainer(base, sft_config(tmp_path, max_length=max_length))
    build_trainer(base, sft_config(tmp_path, max_length=max(full)))  # all fit exactly: no error


def test_lora_settings_without_use_lora_are_refused(base, tmp_path):
    with pytest.raises(ValueError, match="lora_target_modules is set, but use_lora is not"):
        build_trainer(replace(base, lora_target_modules=["embeddings"]), sft_config(tmp_path))


def test_an_adapter_with_weights_for_modules_the_model_lacks_is_refused(base, tmp_path):
    """An adapter made elsewhere (no base_model.json) for a 2-layer model, loaded onto the 1-layer base: PEFT would
    load layer 0's adapters and drop layer 1's without a word."""
    tokenizer = AutoTokenizer.from_pretrained(base.model_dir)
    two_layers = tiny_model(tokenizer, hidden_size=64, num_layers=2)
    config = lora_config(replace(base, use_lora=True, lora_r=2), two_layers)
    get_peft_model(two_layers, config).save_pretrained(tmp_path / "adapter")
    with pytest.raises(ValueError, match=r"4 of its weights have no place in it, e\.g\. .*layers\.1\.lstm"):
        load_model_and_tokenizer(base.model_dir, tmp_path / "adapter")


@pytest.mark.parametrize(
    "model_type, settings, expected",
    [
        (LSTMConfig.model_type, {}, ([], ["weight_ih_l0", "weight_hh_l0"])),
        ("lstm", {"lora_target_modules": ["embeddings"]}, (["embeddings"], ["weight_ih_l0", "weight_hh_l0"])),
        ("gpt2", {}, (["c_attn", "c_proj", "c_fc"], [])),
        ("gpt2", {"lora_target_modules": ["c_attn"]}, (["c_attn"], [])),
        ("llama", {}, (["q_proj", "v_proj"], [])),  # PEFT's own table
    ],
    ids=["lstm", "lstm-with-embeddings", "gpt2", "gpt2-as-named", "llama-from-peft"],
)
def test_lora_targets_default_to_the_architectures(model_type, settings, expected):
    assert lora_targets(FinetuneArguments(use_lora=True, **settings), model_type) == expected


def test_a_model_type_without_default_lora_targets_must_name_them():
    with pytest.raises(ValueError, match="No default LoRA targets for model type 'mamba'"):
        lora_targets(FinetuneArguments(use_lora=True), "mamba")
    assert lora_targets(FinetuneArguments(use_lora=True, lora_target_modules=["in_proj"]), "mamba") == (["in_proj"], [])


@pytest.fixture(scope="module")
def gpt2_base(base, tmp_path_factory) -> FinetuneArguments:
    """The base fixture's world and tokenizer with a tiny gpt2 built from scratch (128 positions)."""
    folder = tmp_path_factory.mktemp("gpt2_base") / "model"
    tokenizer = AutoTokenizer.from_pretrained(base.model_dir)
    save_atomically(folder, tiny_gpt2(tokenizer).train(), tokenizer)
    return replace(base, model_dir=str(folder))


@pytest.mark.learns
def test_lora_on_gpt2_adapts_its_projections_trains_only_them_and_merges(gpt2_base, tmp_path):
    args = replace(gpt2_base, use_lora=True, lora_r=4)
    trainer = build_trainer(args, sft_config(tmp_path, num_train_epochs=5, per_device_train_batch_size=6))
    adapted = {name.split(".lora_")[0] for name, _ in trainer.model.named_parameters() if ".lora_" in name}
    prefix = "base_model.model.transformer.h"
    layers = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert adapted == {f"{prefix}.{i}.{layer}" for i in range(2) for layer in layers}
    # Conv1D stores (in, out): PEFT is told to transpose (else it warns, layer by layer, and does it itself).
    gpt2 = AutoModelForCausalLM.from_pretrained(gpt2_base.model_dir)
    assert lora_config(args, gpt2).fan_in_fan_out
    assert not lora_config(args, tiny_model(trainer.processing_class)).fan_in_fan_out  # the LSTM's nn.LSTM
    # A (r x in) and B (out x r) of c_attn 32 -> 96, c_proj 32 -> 32, c_fc 32 -> 128, c_proj 128 -> 32, per layer.
    per_layer = 4 * (32 + 96) + 4 * (32 + 32) + 4 * (32 + 128) + 4 * (128 + 32)
    assert trainer.model.num_parameters(only_trainable=True) == 2 * per_layer == 4096
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    changed = {name for name, p in trainer.model.named_parameters() if not torch.equal(p, before[name])}
    assert any("lora_B" in name for name in changed)  # B starts at zero: the adapter now does something
    assert all("lora_" in name for name in changed)  # the base weights are as loaded

    peft_model = trainer.model.eval()
    ids = trainer.processing_class(["Question: Where", "Question: Who was"], return_tensors="pt", padding=True)
    logits = peft_model(**ids).logits
    with peft_model.disable_adapter():
        assert not torch.allclose(peft_model(**ids).logits, logits, atol=1e-4)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged, _ = load_model_and_tokenizer(gpt2_base.model_dir, tmp_path / "adapter")
    assert type(merged) is GPT2LMHeadModel
    assert (merged(**ids).logits - logits).abs().max() <= 1e-5
    unmerged, _ = load_model_and_tokenizer(gpt2_base.model_dir, tmp_path / "adapter", merge=False)
    assert isinstance(unmerged, PeftModel) and (unmerged(**ids).logits - logits).abs().max() <= 1e-5


def test_a_gpt2_adapter_run_loads_only_onto_its_base(gpt2_base, tmp_path):
    out = finetune(replace(gpt2_base, use_lora=True, lora_r=2), sft_config(tmp_path / "run", num_train_epochs=2))
    model, _ = load_model_and_tokenizer(gpt2_base.model_dir, out / "adapter")
    assert type(model) is GPT2LMHeadModel
    with pytest.raises(ValueError, match="trained on another base model"):
        load_model_and_tokenizer(other_base(gpt2_base, tmp_path / "twin"), out / "adapter")


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"use_lora": True, "lora_target_modules": ["wte"]},
            r"names the embeddings \(transformer\.wte\).*tied to them",
        ),
        ({"use_lora": True, "lora_target_modules": ["lm_head"]}, "names 'lm_head'"),
        ({"lora_target_parameters": ["c_attn.weight"]}, "lora_target_parameters is set, but use_lora is not"),
    ],
    ids=["tied-embeddings", "head", "targets-without-lora"],
)
def test_lora_settings_that_do_not_fit_gpt2_are_refused(gpt2_base, tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        build_trainer(replace(gpt2_base, **settings), sft_config(tmp_path))


def test_fine_tuning_examples_longer_than_a_transformer_reads_are_refused(gpt2_base, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"max_length \(the longest fine-tuning example\) is 200 tokens, longer than "
        "the 128 positions the gpt2 model can read",
    ):
        build_trainer(gpt2_base, sft_config(tmp_path, max_length=200))


@pytest.mark.parametrize("metric", ["eval_qa_known_heldout_auroc", "finetune_auroc"])
def test_a_best_model_metric_that_can_be_undefined_is_refused_before_training(base, tmp_path, metric):
    """AUROC is NaN whenever a set's answers are all right or all wrong: no evaluation would ever be best, and
    `load_best_model_at_end` would keep the last model without a word."""
    settings = dict(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True)
    with pytest.raises(ValueError, match=rf"metric_for_best_model='{metric}' is undefined \(NaN\)"):
        build_trainer(base, sft_config(tmp_path, metric_for_best_model=metric, **settings))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"early_stopping_patience": 2}, "early_stopping_patience needs evaluations"),
        ({"early_stopping_patience": 0}, "early_stopping_patience must be at least 1, got 0"),
    ],
    ids=["no-evaluations", "zero"],
)
def test_early_stopping_without_what_it_needs_is_refused(base, tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        build_trainer(replace(base, **settings), sft_config(tmp_path))


@pytest.mark.learns
def test_metrics_json_describes_the_model_load_best_model_at_end_kept(base, tmp_path):
    """Evaluations every 2 of 8 steps, the best by the unknown people's abstention rate: no answer abstains (the set
    has no " I don't know" target), so the first evaluation stays the best and the saved model is step 2's, not the
    last. metrics.json must give step 2's figures, and the saved model evaluated anew must give them too."""
    args = replace(base, factuality_max_questions=6)
    settings = dict(
        num_train_epochs=8, per_device_train_batch_size=6, learning_rate=0.01, eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, load_best_model_at_end=True,
        metric_for_best_model="eval_qa_unknown_heldout_abstention_rate", greater_is_better=True,
    )  # fmt: skip
    out = finetune(args, sft_config(tmp_path / "run", **settings))
    history = json.loads((out / "log_history.json").read_text())["log_history"]
    evaluations = {e["step"]: e for e in history if "eval_loss" in e}
    assert list(evaluations) == [2, 4, 6, 8]
    assert all(e["eval_qa_unknown_heldout_abstention_rate"] == 0.0 for e in evaluations.values())
    assert evaluations[2]["eval_loss"] != evaluations[8]["eval_loss"]  # training moved the model
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_step"] == 2 and metrics["eval_loss"] == evaluations[2]["eval_loss"]
    assert metrics["epoch"] == evaluations[2]["epoch"] == 2.0  # the kept model's epoch, not the run's last
    assert metrics["eval_finetune_accuracy"] == evaluations[2]["eval_finetune_accuracy"]
    again = build_trainer(
        replace(args, model_dir=str(out / "model"), factuality_sets=[]), sft_config(tmp_path / "again")
    )
    assert again.evaluate()["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)


class Crash(Exception):
    """The interruption of a run."""


class CrashAfterSaving(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Crash(f"interrupted after saving step {self.step}")


def test_a_resumed_early_stopping_run_stops_where_the_uninterrupted_one_does(base, tmp_path):
    """Patience 3, an evaluation and a checkpoint every 2 steps, and a learning rate of 0, so that eval_loss never
    improves after the first evaluation: the uninterrupted run stops at step 8 (no better at 4, 6, 8). One that
    crashes after saving step 6 (patience count 2) and is resumed there must stop at 8 too, not start counting
    again and stop at 12."""
    args = replace(base, factuality_sets=[], early_stopping_patience=3)
    settings = dict(
        num_train_epochs=40, per_device_train_batch_size=6, learning_rate=0.0, eval_strategy="steps", eval_steps=2,
        save_strategy="steps", save_steps=2, load_best_model_at_end=True, metric_for_best_model="eval_loss",
    )  # fmt: skip
    whole = build_trainer(args, sft_config(tmp_path / "whole", **settings))
    whole.train()
    assert whole.state.global_step == 8
    interrupted = build_trainer(args, sft_config(tmp_path / "interrupted", **settings))
    interrupted.add_callback(CrashAfterSaving(6))
    with pytest.raises(Crash):
        interrupted.train()
    resumed = build_trainer(args, sft_config(tmp_path / "interrupted", **settings))
    resumed.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-6"))
    assert resumed.state.global_step == 8
    # transformers' own default would restart the count: refused, rather than quietly training on.
    fresh = build_trainer(
        args, sft_config(tmp_path / "refused", restore_callback_states_from_checkpoint=False, **settings)
    )
    with pytest.raises(ValueError, match="Resuming with EarlyStoppingCallback but restore_callback_states"):
        fresh.train(resume_from_checkpoint=str(tmp_path / "interrupted" / "checkpoint-6"))


def test_a_run_that_ends_between_evaluations_evaluates_its_last_model(base, tmp_path):
    """Evaluations every 3 of 8 steps: the saved model is step 8's, which no scheduled evaluation saw, so metrics.json
    comes from one more evaluation, of that model."""
    args = replace(base, factuality_max_questions=6)
    settings = dict(num_train_epochs=8, per_device_train_batch_size=6, eval_strategy="steps", eval_steps=3)
    out = finetune(args, sft_config(tmp_path / "run", **settings))
    history = json.loads((out / "log_history.json").read_text())["log_history"]
    assert [e["step"] for e in history if "eval_loss" in e] == [3, 6, 8]
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["model_step"], metrics["epoch"]) == (8, 8.0)
    again = build_trainer(
        replace(args, model_dir=str(out / "model"), factuality_sets=[]), sft_config(tmp_path / "again")
    )
    assert again.evaluate()["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)


def test_a_run_that_loads_its_best_model_but_recorded_none_stops(base, tmp_path):
    """No figure may describe a model it is not: with load_best_model_at_end on and no best recorded, the run's
    figures would be of its last model, so it stops (on every process, before anything is written)."""
    settings = dict(eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True)
    trainer = build_trainer(base, sft_config(tmp_path, **settings))
    trainer.state.log_history = [{"eval_loss": float("nan"), "epoch": 1.0, "step": 1}]
    with pytest.raises(RuntimeError, match="load_best_model_at_end is on, but no evaluation of loss was ever best"):
        kept_model_evaluation(trainer)


def test_the_console_shows_one_line_per_evaluation_and_tensorboard_gets_every_figure(base, tmp_path, capsys):
    """The command's console: a line per evaluation with the factuality figures, never the Trainer's dict of every
    figure; the full metrics still reach the log history and a `report_to` tracker (TensorBoard's event files)."""
    out = tmp_path / "run"
    argv = [str(REPO / "configs" / "finetune_tiny.yaml"), "--model_dir", base.model_dir, "--world_dir", base.world_dir]
    argv += ["--output_dir", str(out), "--finetune_size", "6", "--num_train_epochs", "2", "--logging_steps", "1"]
    finetune_cli.main([*argv, "--eval_strategy", "epoch", "--report_to", "tensorboard"])
    console = capsys.readouterr()
    lines = [line for line in console.out.splitlines() if line.startswith("finetune: epoch")]
    assert [line.split(":")[1] for line in lines] == [" epoch 1", " epoch 2"]
    assert "qa_unknown_heldout accuracy" in lines[0] and "hallucination" in lines[0]
    assert "{'" not in console.out + console.err and "eval_qa_known_heldout_accuracy" not in console.out + console.err
    history = json.loads((out / "log_history.json").read_text())["log_history"]
    evaluations = [entry for entry in history if "eval_qa_known_heldout_accuracy" in entry]
    assert [entry["epoch"] for entry in evaluations[:2]] == [1, 2]
    events = EventAccumulator(str(next(out.glob("runs/*"))))
    events.Reload()
    for figure in ("qa_known_heldout_accuracy", "qa_unknown_heldout_hallucination_rate", "finetune_exact_match"):
        recorded = [scalar.value for scalar in events.Scalars(f"eval/{figure}")]
        assert recorded == pytest.approx([entry[f"eval_{figure}"] for entry in evaluations[:2]], abs=1e-6), figure


def test_the_kl_penalty_by_hand():
    """KL(p_ref || p) at two positions: p = (1/2, 1/2) against p_ref = (3/4, 1/4), then equal distributions."""
    logits = torch.tensor([[[0.0, 0.0], [2.0, 1.0], [9.0, 9.0]]])  # the last position predicts nothing
    reference = torch.tensor([[[math.log(3.0), 0.0], [2.0, 1.0], [0.0, 0.0]]])
    first = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.1308
    kl = kl_to_reference(logits, reference, torch.tensor([[True, True]]))
    assert kl.tolist() == pytest.approx([first, 0.0], abs=1e-6)
    assert kl_to_reference(logits, reference, torch.tensor([[False, True]])).tolist() == pytest.approx([0.0], abs=1e-6)
    # Two rows: a prompt of two tokens then a completion of two, and a prompt of one, a completion of two, a pad.
    labels = torch.tensor([[-100, -100, 5, 6], [-100, 7, 8, -100]])
    attention = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert position_mask(labels, attention, "completion").tolist() == [[False, True, True], [True, True, False]]
    assert position_mask(labels, attention, "prompt").tolist() == [[True, False, False], [False, False, False]]
    assert position_mask(labels, attention, "all").tolist() == [[True, True, True], [True, True, False]]


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_the_kl_term_is_zero_for_the_pre_trained_model_and_grows_as_the_weights_move(base, tmp_path, use_lora):
    args = replace(base, use_lora=use_lora, lora_r=4, kl_coef=2.0)
    trainer = build_trainer(args, sft_config(tmp_path, per_device_train_batch_size=6))
    plain = build_trainer(replace(args, kl_coef=0.0), sft_config(tmp_path / "plain", per_device_train_batch_size=6))
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train(), plain.model.train()

    def loss_and_kl(model) -> tuple[float, float]:
        loss = trainer.compute_loss(model, dict(batch)).item()
        return loss, trainer._metrics["train"]["kl_to_pretrained"][-1]

    loss, kl = loss_and_kl(trainer.model)
    assert kl == 0.0  # the model is its own reference before any step
    assert loss == pytest.approx(plain.compute_loss(plain.model, dict(batch)).item(), rel=1e-5)  # the SFT loss alone
    kls = []
    for scale in (0.01, 0.1):  # move the trainable weights away from where they started, further each time
        with torch.no_grad():
            for param in trainer.model.parameters():
                if param.requires_grad:
                    param.add_(scale * torch.randn_like(param))
        kls.append(loss_and_kl(trainer.model)[1])
    assert 0 < kls[0] < kls[1], kls
    if not use_lora:  # the frozen copy kept the weights the run started from
        assert trainer.reference.frozen is not trainer.model


def test_replayed_text_reaches_the_loss(base, tmp_path):
    """A quarter of the examples are the world's pre-training documents, whole: every token of each (and its end)
    is a label, as in pre-training; the questions keep their completion-only labels."""
    trainer = build_trainer(replace(base, replay_fraction=0.25), sft_config(tmp_path, per_device_train_batch_size=8))
    dataset = trainer.train_dataset
    assert len(dataset) == 8  # the 6 questions and round(6 * 0.25 / 0.75) = 2 documents
    documents = set(load_world_datasets(base.world_dir)["pretrain"]["text"])
    tokenizer = trainer.processing_class
    replayed = 0
    for batch in trainer.get_train_dataloader():
        for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            text = tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
            if text in documents:
                replayed += 1
                assert tokenizer.decode(labels[labels != -100]) == text + tokenizer.eos_token
    assert replayed == 2
    with pytest.raises(ValueError, match=r"replay_fraction is 1.0; allowed: a share in \[0, 1\)"):
        replace(base, replay_fraction=1.0)


def test_a_lora_run_with_the_kl_penalty_saves_and_reloads_like_any_adapter(base, tmp_path):
    args = replace(base, use_lora=True, lora_r=4, kl_coef=1.0)
    out = finetune(args, sft_config(tmp_path, num_train_epochs=4, per_device_train_batch_size=6, logging_steps=1))
    history = json.loads((out / "log_history.json").read_text())["log_history"]
    kls = [entry["kl_to_pretrained"] for entry in history if "kl_to_pretrained" in entry]
    assert len(kls) == 4 and kls[0] == 0.0 and kls[-1] > 0  # logged every step, from 0 at the start
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base.model_dir), out / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "adapter")
    ids = tokenizer(["Question: Where was Ada born?\nAnswer:", "Ada"], return_tensors="pt", padding=True)
    base_logits = AutoModelForCausalLM.from_pretrained(base.model_dir).eval()(**ids).logits
    assert not torch.allclose(model(**ids).logits, base_logits)  # the adapter moved
    with model.disable_adapter():
        torch.testing.assert_close(model(**ids).logits, base_logits)  # and the base it reloads onto is untouched


@pytest.mark.parametrize("use_lora", [False, True], ids=["full", "lora"])
def test_two_processes_with_the_kl_penalty_end_with_the_weights_of_one(base, tmp_path, use_lora):
    """The same global batch (4 = 1 x 4 = 2 x 2) under accelerate launch: the KL term, summed per process and divided
    by the whole batch's completion tokens as the SFT loss is, lets two processes averaging their gradients train the
    model one process trains (a mean per process did not: 0.010 apart). With LoRA the reference is the model with its
    adapters off, inside the process group's wrapper too."""
    common = [
        str(REPO / "configs" / "finetune_tiny.yaml"),
        "--model_dir",
        base.model_dir,
        "--world_dir",
        base.world_dir,
    ]
    common += ["--finetune_size", "8", "--num_train_epochs", "2", "--kl_coef", "1.0", "--logging_steps", "1"]
    common += ["--use_lora", "true", "--lora_r", "4", "--learning_rate", "0.01"] if use_lora else []
    finetune_cli.main([*common, "--output_dir", str(tmp_path / "one"), "--per_device_train_batch_size", "4"])
    script = [str(REPO / "scripts" / "finetune.py"), *common, "--output_dir", str(tmp_path / "two")]
    result = accelerate_launch(*script, "--per_device_train_batch_size", "2", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    if use_lora:  # the adapters' weights; B starts at 0, so any B away from 0 has moved
        one, two = (load_file(tmp_path / run / "adapter" / "adapter_model.safetensors") for run in ("one", "two"))
        start = {k: torch.zeros_like(v) if "lora_B" in k else v for k, v in one.items()}
    else:
        one, two = (AutoModelForCausalLM.from_pretrained(tmp_path / r / "model").state_dict() for r in ("one", "two"))
        start = AutoModelForCausalLM.from_pretrained(base.model_dir).state_dict()
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    difference = max((one[k] - two[k]).abs().max().item() for k in one)
    assert moved > 0.01 and difference < 1e-5, (moved, difference)
    history = json.loads((tmp_path / "two" / "log_history.json").read_text())["log_history"]
    assert max(entry.get("kl_to_pretrained", 0) for entry in history) > 0
