"""Pre-training throughput of the default study's model, as a share of the machine's float32 and bfloat16 peak, alone
and beside a busy process.

    python scripts/bench_pretraining.py                 # the default study's model: its settings against 714aacc's
    python scripts/bench_pretraining.py --steps 4 --quick   # a tiny model: a smoke test

Settings, each run for `--steps` training steps (forward, backward, AdamW) on random 64-token sequences, in turn:
`before` is the pre-training of commit 714aacc (batch 16, float32); `study` is `configs/study/pretrain.yaml` today
(its batch, and bfloat16 autocast with float32 master weights where the machine runs bfloat16 natively); the other two
separate the two changes (a machine without native bfloat16 runs only the float32 ones). The peak is the best of
2048 x 2048 and 4096 x 4096 matrix products in float32 and in bfloat16, measured in the same run and under the same
load. FLOPs per token: 6 x the parameters (2 forward, 4 backward; the tied embedding counts once, as the head's
product). Threads: the scripts' automatic choice (`modeling.threads`).
"""

import argparse
import statistics
import subprocess
import sys
import time

import torch
from transformers import TrainingArguments

from modeling import LSTMConfig, LSTMForCausalLM
from modeling.run_config import parse_run_config
from modeling.threads import set_num_threads
from modeling.timing import interleaved
from modeling.training.precision import native_bf16
from modeling.training.pretraining import DEFAULTS, PretrainArguments

CONFIG = "configs/study/pretrain.yaml"
BEFORE_BATCH = 16


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (2048, 4096), repeats: int = 5) -> float:
    """FLOP/s of the best of `repeats` size x size matrix products in `dtype` (2 size^3 FLOPs each), over `sizes`
    (on a 2-core AVX2 CPU, 2048 gave 84 GFLOP/s and 4096 141 in one run)."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        best = max(best, 2 * size**3 / min(interleaved(lambda a=a, b=b: a @ b, repeats=repeats)[0]))
    return best


def training_step(model: LSTMForCausalLM, batch: int, length: int, bf16: bool):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(2, model.config.vocab_size, (batch, length))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def measure(args: argparse.Namespace, settings: dict[str, tuple[int, bool]], model: LSTMForCausalLM) -> dict:
    """Tokens/s of each setting (median of `args.repeats` runs of `args.steps` steps) and the two peaks."""
    steps = {name: training_step(model, batch, args.length, bf16) for name, (batch, bf16) in settings.items()}
    runs = [lambda step=step: [step() for _ in range(args.steps)] for step in steps.values()]
    seconds = interleaved(*runs, repeats=args.repeats)
    figures = {
        name: settings[name][0] * args.length * args.steps / statistics.median(times)
        for name, times in zip(steps, seconds, strict=True)
    }
    # Emulated bfloat16 (no native support) runs a 2048 x 2048 product at well under 1 GFLOP/s: not a peak.
    peak = {"float32": matmul_peak(torch.float32), "bfloat16": matmul_peak(torch.bfloat16) if native_bf16() else None}
    return {"tokens_per_s": figures, "peak": peak}


def report(condition: str, figures: dict, flops_per_token: float, settings: dict) -> None:
    peak = figures["peak"]
    bf16_peak = f"{peak['bfloat16'] / 1e9:.0f} bfloat16" if peak["bfloat16"] else "no native bfloat16"
    print(f"\n{condition}: peak {peak['float32'] / 1e9:.0f} GFLOP/s float32, {bf16_peak}")
    print(
        f"{'setting':>16} {'batch':>6} {'bf16':>5} {'tokens/s':>9} {'GFLOP/s':>8} {'of fp32':>8} {'of bf16':>8} "
        f"{'x before':>9}"
    )
    before = figures["tokens_per_s"]["before"]
    for name, tokens in figures["tokens_per_s"].items():
        flops = tokens * flops_per_token
        batch, bf16 = settings[name]
        of_bf16 = f"{flops / peak['bfloat16']:.1%}" if peak["bfloat16"] else "-"
        print(
            f"{name:>16} {batch:>6} {str(bf16):>5} {tokens:>9.0f} {flops / 1e9:>8.1f} {flops / peak['float32']:>8.1%} "
            f"{of_bf16:>8} {tokens / before:>9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per setting (median)")
    parser.add_argument("--length", type=int, default=64, help="tokens per sequence (the study's max_length)")
    parser.add_argument("--quick", action="store_true", help="a tiny model: a smoke test")
    args = parser.parse_args()
    study, training = parse_run_config((PretrainArguments, TrainingArguments), [CONFIG], DEFAULTS)
    sizes = (
        dict(embedding_dim=16, hidden_size=32, num_layers=1)
        if args.quick
        else dict(embedding_dim=study.embedding_dim, hidden_size=study.hidden_size, num_layers=study.num_layers)
    )
    torch.manual_seed(0)
    model = LSTMForCausalLM(LSTMConfig(vocab_size=study.vocab_size, pad_token_id=0, **sizes)).train()
    flops_per_token = 6 * model.num_parameters()
    batch = training.per_device_train_batch_size
    settings = {"before": (BEFORE_BATCH, False), "before+bf16": (BEFORE_BATCH, True),
                "study batch fp32": (batch, False), "study": (batch, training.bf16)}  # fmt: skip
    if not native_bf16():  # emulated: 0.11x the float32 speed on an AVX2 CPU, measured; `bf16: auto` leaves it off
        print("This machine has no native bfloat16: the bfloat16 settings are left out")
        settings = {name: setting for name, setting in settings.items() if not setting[1]}
    print(f"{CONFIG}: {model.num_parameters():,} parameters, {flops_per_token / 1e6:.1f} MFLOP per token trained")
    for condition in ("alone", "beside a busy process"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition != "alone" else None
        try:
            time.sleep(0.5 if busy else 0)
            threads = set_num_threads(None)
            report(f"{condition} ({threads} thread(s))", measure(args, settings, model), flops_per_token, settings)
        finally:
            if busy:
                busy.kill()


if __name__ == "__main__":
    main()
