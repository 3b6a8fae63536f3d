"""scripts/bench.py: its quick mode runs and prints every row (the values are not checked: a shared CPU is far too
noisy for speed targets in a test), and it refuses to time against a baseline that computes something else. Also
`load_model_and_tokenizer`, which merges an adapter because the "merged scoring" row shows that it pays."""

import argparse
import copy
import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import checkout_env, padded_batch, tiny_model
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from modeling import LSTMForCausalLM
from modeling.checkpoints import load_model_and_tokenizer
from modeling.timing import in_turn, interleaved

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "scripts" / "bench.py"
# Row name: its unit. LoRA share is the only row whose target is an upper bound.
ROWS = {
    "train step": "tok/s",
    "padded step": "tok/s",
    "SFT step": "tok/s",
    "SFT head": "tok/s",
    "generate greedy": "tok/s",
    "cache speed-up": "tok/s",
    "trainer pretrain": "tok/s",
    "LoRA step": "tok/s",
    "LoRA share": "params",
    "merged scoring": "questions/s",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # One thread: the figures do not matter here, and on a busy machine OpenMP threads waiting for each other can make
    # single-token LSTM steps many times slower.
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)],
        cwd=out.parent,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=60,  # about 10 s; the limit only catches a hang
    )
    # A zero exit also means that model and baseline agreed: the checks raise before anything is timed.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ROWS)
def test_prints_a_finite_positive_ratio(quick_run: tuple[str, dict], name: str) -> None:
    stdout, _ = quick_run
    # name, unit, model, baseline, ratio, ">= target" (or "<=" for a share), PASS/FAIL
    bound = "<=" if name == "LoRA share" else ">="
    row = re.search(
        rf"^{re.escape(name)}\s+{re.escape(ROWS[name])}\s+(\S+)\s+(\S+)\s+(\S+)\s+{bound} (\S+)\s+(PASS|FAIL)$",
        stdout,
        re.MULTILINE,
    )
    assert row, stdout
    for figure in row.groups()[:4]:
        assert math.isfinite(float(figure)) and float(figure) > 0, row.group(0)


def test_writes_the_figures_as_json(quick_run: tuple[str, dict]) -> None:
    _, report = quick_run
    assert {r["name"]: r["unit"] for r in report["results"]} == ROWS
    assert list(ROWS) == [r["name"] for r in report["results"]]
    for r in report["results"]:
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert r["at_most"] == (r["name"] == "LoRA share")
        assert r["passed"] == (r["ratio"] <= r["target"] if r["at_most"] else r["ratio"] >= r["target"])


def test_lora_share_counts_the_adapters_at_the_benchmark_sizes(quick_run: tuple[str, dict]) -> None:
    """r = 8 on both matrices of each of the 3 layers (embedding 128, hidden 256): r x (in + 4 hidden) for the
    input-to-hidden matrix, r x (hidden + 4 hidden) for the hidden-to-hidden one."""
    _, report = quick_run
    share = next(r for r in report["results"] if r["name"] == "LoRA share")
    adapters = 8 * (128 + 4 * 256) + 5 * 8 * (256 + 4 * 256)  # layer 0's input-to-hidden matrix, then the 5 others
    assert share["model"] == adapters
    assert share["ratio"] == pytest.approx(share["model"] / share["baseline"])
    assert (share["target"], share["passed"]) == (0.05, share["ratio"] <= 0.05)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """scripts/bench.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_args(bench: ModuleType, monkeypatch: pytest.MonkeyPatch, dtype: str) -> argparse.Namespace:
    monkeypatch.setattr(sys, "argv", ["bench.py", "--quick", "--device", "cpu", "--threads", "1", "--dtype", dtype])
    return bench.parse_args()


def scaled_logits(factor: float):
    """Breaks BareLSTM.from_model: the copy's projection weights times `factor`. The projection feeds only the head,
    which shares the embedding matrix, so exactly the baseline's logits are multiplied by `factor`; a negative factor
    turns greedy's argmax into the argmin, so the very first new token differs."""

    def install(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
        from_model = bench.BareLSTM.from_model

        def scaled_from_model(model):
            bare = from_model(model)
            with torch.no_grad():
                bare.projection.weight.mul_(factor)
            return bare

        monkeypatch.setattr(bench.BareLSTM, "from_model", staticmethod(scaled_from_model))

    return install


def token_changed_at(new_token: int):
    """Breaks greedy_bare: it returns another token at position `new_token` of the generated ones."""

    def install(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
        greedy_bare = bench.greedy_bare

        def wrong_greedy_bare(bare, prompt, new_tokens):
            tokens = greedy_bare(bare, prompt, new_tokens).clone()
            tokens[0, bench.PROMPT_LEN + new_token] += 1
            return tokens

        monkeypatch.setattr(bench, "greedy_bare", wrong_greedy_bare)

    return install


def broken_bare_step(summed_loss: bool = False, gradient_factor: float = 1.0):
    """Breaks bare_pretrain_step: it trains on the loss summed over the labels instead of their mean, or backpropagates
    the loss times `gradient_factor` (reporting the loss itself)."""

    def install(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
        def wrong_step(model, optimizer, ids, max_grad_norm):
            optimizer.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss * (ids[:, 1:].numel() if summed_loss else 1)
            (loss * gradient_factor).backward()
            grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            return loss.detach(), grad_norm

        monkeypatch.setattr(bench, "bare_pretrain_step", wrong_step)

    return install


def nonzero_fresh_lora(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Breaks the LoRA benchmark's model: its fresh adapter is not a no-op, so it is another model than the full one."""
    lora_config = bench.lora_config

    def random_lora_config(args, model):
        config = lora_config(args, model)
        config.init_lora_weights = False
        return config

    monkeypatch.setattr(bench, "lora_config", random_lora_config)


def wrong_merge(kind: str):
    """Breaks merged_copy: "unload" drops the adapter instead of merging it (PEFT's `unload()`), "0.02% off" merges it
    and then scales the first layer's hidden-to-hidden matrix by 1.0002 (logits about 8e-5 off, and answers still
    alike: 0.05% already flips a near-tie)."""

    def install(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
        merged_copy = bench.merged_copy

        def wrong_merged_copy(model):
            if kind == "unload":
                return copy.deepcopy(model).unload()
            merged = merged_copy(model)
            with torch.no_grad():
                merged.model.layers[0].lstm.weight_hh_l0.mul_(1.0002)
            return merged

        monkeypatch.setattr(bench, "merged_copy", wrong_merged_copy)

    return install


@pytest.mark.parametrize(
    "dtype, benchmark, break_baseline, message",
    [
        ("float32", "bench_generation", token_changed_at(5), "different tokens in float32, first at new token 5: "),
        ("float32", "bench_generation", scaled_logits(-1.0), "different tokens in float32, first at new token 0: "),
        ("bfloat16", "bench_generation", scaled_logits(-1.0), "disagree on the first step's logits in bfloat16"),
        # 10% off the largest logit: beyond 2% of it plus 2% of the logit itself.
        ("bfloat16", "bench_generation", scaled_logits(1.1), "disagree on the first step's logits in bfloat16"),
        # Logits of about 10 instead of 0.01: the loss is far above log(vocab size), where the model's is.
        ("float32", "bench_training", scaled_logits(1000.0), "disagree before training: loss"),
        ("bfloat16", "bench_training", scaled_logits(1000.0), "disagree before training: loss"),
        ("float32", "bench_trainer_pretraining", broken_bare_step(summed_loss=True), "first step's loss: "),
        ("bfloat16", "bench_trainer_pretraining", broken_bare_step(summed_loss=True), "first step's loss: "),
        # The same loss, a gradient 0.1% off: beyond float32's 1e-4 on the gradient norm.
        ("float32", "bench_trainer_pretraining", broken_bare_step(gradient_factor=1.001), "first step's grad_norm: "),
        ("bfloat16", "bench_trainer_pretraining", broken_bare_step(gradient_factor=1.1), "first step's grad_norm: "),
        ("float32", "bench_lora", nonzero_fresh_lora, "a fresh LoRA model and the full model disagree on the logits"),
        ("bfloat16", "bench_lora", nonzero_fresh_lora, "a fresh LoRA model and the full model disagree on the logits"),
        ("float32", "bench_merged_scoring", wrong_merge("unload"), "answer differently, first at question 0: "),
        # Answers still alike, logits not.
        ("float32", "bench_merged_scoring", wrong_merge("0.02% off"), "PeftModel disagree on the logits in float32"),
        ("bfloat16", "bench_merged_scoring", wrong_merge("unload"), "PeftModel disagree on the logits in bfloat16"),
    ],
    ids=[
        "float32-generate-wrong-token-5",
        "float32-generate-negated-logits",
        "bfloat16-generate-negated-logits",
        "bfloat16-generate-logits-10%-off",
        "float32-train-logits-x1000",
        "bfloat16-train-logits-x1000",
        "float32-trainer-summed-loss",
        "bfloat16-trainer-summed-loss",
        "float32-trainer-gradient-0.1%-off",
        "bfloat16-trainer-gradient-10%-off",
        "float32-lora-random-fresh-adapter",
        "bfloat16-lora-random-fresh-adapter",
        "float32-merged-adapter-dropped",
        "float32-merged-weights-0.02%-off",
        "bfloat16-merged-adapter-dropped",
    ],
)
def test_a_baseline_that_computes_something_else_stops_the_benchmark(
    bench, monkeypatch, dtype, benchmark, break_baseline, message
):
    """Timing against a wrong answer must fail loudly, not print a ratio."""
    args = quick_args(bench, monkeypatch, dtype)
    break_baseline(bench, monkeypatch)
    with pytest.raises(RuntimeError, match=re.escape(message)):
        getattr(bench, benchmark)(args)


def test_bfloat16_generation_check_allows_its_rounding(bench, monkeypatch):
    """Logits 1% off, about what bfloat16's rounding does, pass the check, and the benchmark runs to a ratio."""
    args = quick_args(bench, monkeypatch, "bfloat16")
    args.repeats, args.gen_tokens = 1, 4  # the check is what is tested here, not the timing
    scaled_logits(1.01)(bench, monkeypatch)
    result = bench.bench_generation(args)
    assert result.name == "generate greedy"
    assert math.isfinite(result.ratio) and result.ratio > 0


@pytest.fixture
def saved_model_and_adapter(tmp_path, model, tokenizer) -> tuple[Path, Path, PeftModel]:
    """A tiny model and tokenizer saved to tmp_path/model, a random (non-trivial) LoRA adapter on it saved to
    tmp_path/adapter, and the PeftModel in memory."""
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    lora = LoraConfig(r=4, target_parameters=["weight_ih_l0", "weight_hh_l0"], init_lora_weights=False)
    peft_model = get_peft_model(tiny_model(tokenizer), lora).eval()  # the same weights as `model`, another instance
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "model", tmp_path / "adapter", peft_model


def logits_of_a_prompt_and_a_step(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits of a left-padded batch (the fused LSTM over packed rows), then of one more token per row with the cache
    (the single-step lstm_cell path), concatenated: (B, T + 1, V)."""
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask, use_cache=True)
        step = model(input_ids=ids[:, -1:], cache=first.cache).logits
    return torch.cat([first.logits, step], dim=1)


def test_load_with_an_adapter_returns_the_merged_plain_model(saved_model_and_adapter):
    model_dir, adapter_dir, peft_model = saved_model_and_adapter
    merged, _ = load_model_and_tokenizer(model_dir, adapter_dir)
    assert type(merged) is LSTMForCausalLM and not merged.training
    assert not [name for name, _ in merged.named_parameters() if "lora" in name]
    ids, mask, _ = padded_batch(merged, [9, 5, 7])  # distinct rows, left padding
    expected = logits_of_a_prompt_and_a_step(peft_model, ids, mask)
    logits = logits_of_a_prompt_and_a_step(merged, ids, mask)
    assert (logits - expected).abs().max() <= 1e-5
    with peft_model.disable_adapter():
        base = logits_of_a_prompt_and_a_step(peft_model, ids, mask)
    assert (logits - base).abs().max() > 1e-2  # the adapter is merged, not dropped


def test_load_with_merge_false_keeps_the_peft_model(saved_model_and_adapter):
    model_dir, adapter_dir, peft_model = saved_model_and_adapter
    loaded, _ = load_model_and_tokenizer(model_dir, adapter_dir, merge=False)
    assert isinstance(loaded, PeftModel) and not loaded.training
    ids, mask, _ = padded_batch(peft_model, [9, 5, 7])
    expected = logits_of_a_prompt_and_a_step(peft_model, ids, mask)
    assert (logits_of_a_prompt_and_a_step(loaded, ids, mask) - expected).abs().max() <= 1e-5


def test_runs_in_turn_move_who_goes_first_every_repeat():
    calls = []
    runs = {name: lambda name=name: calls.append(name) or len(calls) for name in ("a", "b", "c")}
    assert in_turn(runs, repeats=4) == {"a": [1, 6, 8, 10], "b": [2, 4, 9, 11], "c": [3, 5, 7, 12]}
    assert "".join(calls) == "abcbcacababc"


def test_interleaved_warms_each_up_once_and_times_every_repeat():
    calls = []
    first, second = (lambda: calls.append(1), lambda: calls.append(2))
    times = interleaved(first, second, lambda: 0.25, repeats=3)
    assert calls == [1, 2, 1, 2, 2, 1, 1, 2]  # warm-up, then in turn (the third times itself)
    assert [len(t) for t in times] == [3, 3, 3] and times[2] == [0.25] * 3
    assert all(0 <= seconds < 1 for seconds in times[0] + times[1])
