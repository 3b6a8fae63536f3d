"""scripts/bench.py: its quick mode runs and prints the three ratios (their values are not checked: a shared CPU is far
too noisy for speed targets in a test), and it refuses to time against a baseline that computes something else."""

import argparse
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
from helpers import checkout_env

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH = REPO_ROOT / "scripts" / "bench.py"
ROWS = ["train step", "generate greedy", "cache speed-up"]


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
    # name, model tok/s, baseline tok/s, ratio, ">= target", PASS/FAIL
    row = re.search(rf"^{re.escape(name)}\s+(\S+)\s+(\S+)\s+(\S+)\s+>= (\S+)\s+(PASS|FAIL)$", stdout, re.MULTILINE)
    assert row, stdout
    for figure in row.groups()[:4]:
        assert math.isfinite(float(figure)) and float(figure) > 0, row.group(0)


def test_writes_the_figures_as_json(quick_run: tuple[str, dict]) -> None:
    _, report = quick_run
    assert [r["name"] for r in report["results"]] == ROWS
    for r in report["results"]:
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert r["passed"] == (r["ratio"] >= r["target"])


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
    ],
    ids=[
        "float32-generate-wrong-token-5",
        "float32-generate-negated-logits",
        "bfloat16-generate-negated-logits",
        "bfloat16-generate-logits-10%-off",
        "float32-train-logits-x1000",
        "bfloat16-train-logits-x1000",
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
