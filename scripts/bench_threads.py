"""CPU thread settings measured alone and beside a busy process: the automatic choice against fixed ones.

    python scripts/bench_threads.py                  # 40 training steps and 128 generated tokens per setting
    python scripts/bench_threads.py --steps 10 --out threads.json
    python scripts/bench_threads.py --quick         # a tiny model, for the smoke test

Each setting runs in a fresh process (OpenMP reads its settings once): `auto` is what the scripts do by default
(`modeling.threads.set_num_threads` with OMP_NUM_THREADS unset: the cores free at the start), the others fix the
thread count. A process runs `--steps` training steps of the default model size (forward, backward, AdamW; batch 16
of 128 tokens) and then greedy generation (batch 64, 128 new tokens, as scoring answers questions). Then the same
again beside `python -c "while True: pass"`. Targets (the fine-tuning issue): `auto` within 5% of the fastest setting
on a free machine, and within 1.6x of the fastest beside the busy loop, for training and generation alike. Machines
are noisy: each figure is the median of `--repeats` runs.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from modeling import LSTMConfig, LSTMForCausalLM
from modeling.threads import set_num_threads, usable_cores
from modeling.timing import in_turn

TARGETS = {"free": 1.05, "busy": 1.6}


def worker(threads: str, steps: int, quick: bool) -> dict[str, float]:
    """One setting in this process: returns the seconds of training and of generation, and the threads used."""
    used = set_num_threads(None if threads == "auto" else int(threads))
    torch.manual_seed(0)
    sizes = dict(embedding_dim=16, hidden_size=32, num_layers=1) if quick else {}
    config = LSTMConfig(
        vocab_size=1024, pad_token_id=0, **{"embedding_dim": 128, "hidden_size": 256, "num_layers": 3, **sizes}
    )
    model = LSTMForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(2, 1024, (16, 128))
    prompts = torch.randint(2, 1024, (64, 12))
    new_tokens = 4 if quick else 128

    def train(num_steps: int) -> None:
        model.train()
        for _ in range(num_steps):
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def generate(num_tokens: int) -> None:
        model.eval()
        model.generate(prompts, max_new_tokens=num_tokens, min_new_tokens=num_tokens, do_sample=False, pad_token_id=0)

    # The first calls pay for allocations and kernel set-up, which the timed ones should not.
    train(1)
    generate(2)
    start = time.perf_counter()
    train(steps)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    generate(new_tokens)
    return {"threads": used, "train": train_seconds, "generate": time.perf_counter() - start}


def run_setting(threads: str, steps: int, quick: bool) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    command = [sys.executable, __file__, "--worker", threads, "--steps", str(steps), *(["--quick"] if quick else [])]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(settings: list[str], steps: int, repeats: int, quick: bool) -> dict[str, dict[str, float]]:
    # In turn, so that a slow spell of the machine hits every setting alike.
    runs = in_turn({setting: lambda s=setting: run_setting(s, steps, quick) for setting in settings}, repeats)
    return {
        setting: {
            "threads": results[0]["threads"],
            **{phase: statistics.median(r[phase] for r in results) for phase in ("train", "generate")},
        }
        for setting, results in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting and condition (median)")
    parser.add_argument("--quick", action="store_true", help="a tiny model and 4 generated tokens: a smoke test")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.quick)))
        return

    settings = ["auto", *sorted({"1", str(usable_cores())}, key=int)]
    report = {}
    for condition in ("free", "busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "busy" else None
        try:
            time.sleep(0.5 if busy else 0)
            figures = measure(settings, args.steps, args.repeats, args.quick)
        finally:
            if busy:
                busy.kill()
        report[condition] = {"settings": figures, "auto_ratio": {}}
        print(f"\n{condition} machine ({usable_cores()} cores{', one busy loop beside' if busy else ''}):")
        print(f"{'setting':>8} {'threads':>8} {'train s':>9} {'generate s':>11}")
        for setting, row in figures.items():
            print(f"{setting:>8} {row['threads']:>8} {row['train']:>9.2f} {row['generate']:>11.2f}")
        for phase in ("train", "generate"):
            fastest = min(row[phase] for row in figures.values())
            ratio = figures["auto"][phase] / fastest
            verdict = "ok" if ratio <= TARGETS[condition] else "MISSED"
            print(f"  auto / fastest, {phase}: {ratio:.2f} (target <= {TARGETS[condition]}) {verdict}")
            report[condition]["auto_ratio"][phase] = ratio
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
