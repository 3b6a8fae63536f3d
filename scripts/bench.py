"""Speed of LSTMForCausalLM against bare PyTorch loops of the same sizes, as ratios measured in one run.

    python scripts/bench.py                          # default sizes, cuda if available else cpu
    python scripts/bench.py --quick                  # a few seconds: the smoke test runs this
    python scripts/bench.py --device cuda --dtype bfloat16 --out bench.json

Three figures, each a ratio (model / baseline) with its target:
  train step        training tokens/s (forward + backward + AdamW step) vs nn.Embedding + nn.LSTM + nn.Linear with
                    F.cross_entropy, built from the model's own weights                         target >= 0.95
  generate greedy   model.generate() tokens/s (batch 1, cache on) vs a hand-stepped nn.LSTM loop  target >= 0.5
  cache speed-up    generate() tokens/s with the cache vs generate(use_cache=False)             target >= 10

A ratio against a baseline that computes something else means nothing, so the first two benchmarks check that both
sides agree, and the script stops with a RuntimeError if they do not: the same loss before training; in float32 the
same 32 greedy tokens, in bfloat16 (where the two kernels round differently and near-ties may flip) the same
first-step logits to within 2% of the largest.

Machines are noisy, so model and baseline runs alternate (the order flips every repeat), both are warmed up first,
and each ratio is the median over repeats of model / baseline timed back to back. The model and baseline columns are
the medians of their own runs. The default sizes take about a minute on 2 CPU cores, most of it in the uncached
generate runs (quadratic in length). On a shared CPU, --threads 1 keeps other jobs from stalling the OpenMP threads.
"""

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import transformers
from torch import nn

from modeling import LSTMConfig, LSTMForCausalLM

PROMPT_LEN = 16
CHECK_TOKENS = 32  # new tokens generate() and the hand-stepped loop must agree on in float32
PAD_ID, EOS_ID = 0, 1  # like the project's tokenizer; prompts avoid both


@dataclass
class Result:
    name: str
    model: float  # median of the model's runs
    baseline: float  # median of the baseline's runs
    ratio: float  # median over repeats of model / baseline, timed back to back
    target: float
    model_seconds: list[float]  # every timed run, to judge the noise
    baseline_seconds: list[float]

    @property
    def passed(self) -> bool:
        return self.ratio >= self.target


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, help="training batch (default 16; --quick: 4)")
    parser.add_argument("--seq-len", type=int, help="training sequence length (default 128; --quick: 32)")
    parser.add_argument("--vocab-size", type=int, help="default 2000; --quick: 256")
    parser.add_argument("--repeats", type=int, help="timed runs of each side (default 5; --quick: 2)")
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps, for a smoke test")
    parser.add_argument(
        "--threads", type=int, help="CPU threads for torch (default: torch's choice); 1 is steadier on a shared machine"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    # (default, --quick) for the flags left out. The defaults make every timed run last a few hundred ms or more, so
    # timer and scheduler noise stay small next to it.
    for name, sizes in dict(batch_size=(16, 4), seq_len=(128, 32), vocab_size=(2000, 256), repeats=(5, 2)).items():
        if getattr(args, name) is None:
            setattr(args, name, sizes[args.quick])
    args.train_steps = 1 if args.quick else 2  # timed training steps per repeat
    args.gen_tokens = 32 if args.quick else 256
    args.cache_tokens = 64 if args.quick else 512
    for name in ("batch_size", "seq_len", "vocab_size", "repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.vocab_size <= EOS_ID + 1:
        parser.error(f"--vocab-size must exceed {EOS_ID + 1} (ids {PAD_ID} and {EOS_ID} are special)")
    return args


class BareLSTM(nn.Module):
    """What a hand-written LSTM language model looks like: one multi-layer nn.LSTM, the model's projection (if any)
    and a head tied to the embedding, so the parameter count and the arithmetic match the model's."""

    def __init__(self, config: LSTMConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.projection = (
            nn.Linear(config.hidden_size, config.embedding_dim, bias=False)
            if config.output_size != config.hidden_size
            else None
        )
        self.head = nn.Linear(config.output_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.head.weight = self.embedding.weight

    @classmethod
    def from_model(cls, model: LSTMForCausalLM) -> "BareLSTM":
        """A copy with the model's weights: identical outputs prove both sides do the same work."""
        bare = cls(model.config).to(device=model.device, dtype=model.dtype)
        with torch.no_grad():
            bare.embedding.weight.copy_(model.model.embeddings.weight)
            for i, block in enumerate(model.model.layers):
                for name, param in block.lstm.named_parameters():  # weight_ih_l0, ... of a one-layer LSTM
                    getattr(bare.lstm, name.replace("_l0", f"_l{i}")).copy_(param)
            if bare.projection is not None:
                bare.projection.weight.copy_(model.model.projection.weight)
            if not model.config.tie_word_embeddings:
                bare.head.weight.copy_(model.lm_head.weight)
        return bare.train(model.training)

    def forward(
        self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None, last_only: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        hidden, state = self.lstm(self.embedding(ids), state)  # (B, T, H); state: 2 x (L, B, H)
        if last_only:  # generation needs only the next token's logits
            hidden = hidden[:, -1:]
        if self.projection is not None:
            hidden = self.projection(hidden)
        return self.head(hidden), state  # (B, T, V)


def make_config(args: argparse.Namespace) -> LSTMConfig:
    # The config's default sizes; an EOS id so that min_new_tokens (not luck) keeps runs at full length.
    return LSTMConfig(vocab_size=args.vocab_size, dropout=0.0, pad_token_id=PAD_ID, eos_token_id=EOS_ID)


def build_model(args: argparse.Namespace) -> LSTMForCausalLM:
    """The same weights on every call: each benchmark starts from the same model."""
    transformers.set_seed(args.seed)
    return LSTMForCausalLM(make_config(args)).to(device=args.device, dtype=getattr(torch, args.dtype))


def random_ids(args: argparse.Namespace, batch: int, length: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(args.seed)
    return torch.randint(EOS_ID + 1, args.vocab_size, (batch, length), generator=generator).to(args.device)


def timed(fn: Callable[[], object], device: str) -> float:
    """Seconds one call of `fn` takes, including the GPU work it queued."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(
    model_fn: Callable[[], object], baseline_fn: Callable[[], object], repeats: int, device: str, warm_up: bool = True
) -> tuple[list[float], list[float]]:
    """Times of `repeats` runs of each, after one warm-up run each (kernel choice, allocator, optimizer state). The
    two alternate, and who goes first flips every repeat, so drift in the machine's speed (other jobs, clocks) hits
    both sides alike."""
    if warm_up:
        model_fn(), baseline_fn()
    model_times, baseline_times = [], []
    for r in range(repeats):
        if r % 2 == 0:
            model_times.append(timed(model_fn, device))
            baseline_times.append(timed(baseline_fn, device))
        else:
            baseline_times.append(timed(baseline_fn, device))
            model_times.append(timed(model_fn, device))
    return model_times, baseline_times


def as_result(name: str, work: float, model_times: list[float], baseline_times: list[float], target: float) -> Result:
    """`work` tokens were processed per run; figures are tokens per second."""
    return Result(
        name=name,
        model=work / statistics.median(model_times),
        baseline=work / statistics.median(baseline_times),
        ratio=statistics.median(b / m for m, b in zip(model_times, baseline_times, strict=True)),
        target=target,
        model_seconds=model_times,
        baseline_seconds=baseline_times,
    )


def bench_training(args: argparse.Namespace) -> Result:
    model = build_model(args).train()
    bare = BareLSTM.from_model(model)
    ids = random_ids(args, args.batch_size, args.seq_len)
    # Same function before any step: same loss from the same weights (the model shifts labels inside forward).
    with torch.no_grad():
        model_loss = model(input_ids=ids, labels=ids).loss
        logits, _ = bare(ids)
        bare_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    if not torch.allclose(model_loss.float(), bare_loss.float(), rtol=1e-2 if args.dtype != "float32" else 1e-4):
        raise RuntimeError(f"model and baseline disagree before training: loss {model_loss} vs {bare_loss}")

    model_opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=1e-3)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != sum(p.numel() for p in bare.parameters()):
        raise RuntimeError("model and baseline have different parameter counts")

    def model_steps() -> None:
        for _ in range(args.train_steps):
            model_opt.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()
            model_opt.step()

    def bare_steps() -> None:
        for _ in range(args.train_steps):
            bare_opt.zero_grad(set_to_none=True)
            logits, _ = bare(ids)
            F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
            bare_opt.step()

    model_times, bare_times = interleaved(model_steps, bare_steps, args.repeats, args.device)
    tokens = args.train_steps * args.batch_size * args.seq_len
    return as_result("train step", tokens, model_times, bare_times, target=0.95)


def generate(model: LSTMForCausalLM, prompt: torch.Tensor, new_tokens: int, use_cache: bool = True) -> torch.Tensor:
    # min_new_tokens = max_new_tokens: an EOS cannot end a run early, so every run does the same work.
    return model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        use_cache=use_cache,
    )


def greedy_bare(bare: BareLSTM, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Feed the prompt, then one token per step with the carried (h, c): what generate() does, by hand."""
    logits, state = bare(prompt, last_only=True)
    tokens = [logits[:, -1].argmax(-1, keepdim=True)]
    for _ in range(new_tokens - 1):
        logits, state = bare(tokens[-1], state, last_only=True)
        tokens.append(logits[:, -1].argmax(-1, keepdim=True))
    return torch.cat([prompt, *tokens], dim=1)


def check_generation(args: argparse.Namespace, model: LSTMForCausalLM, bare: BareLSTM, prompt: torch.Tensor) -> None:
    """Raises RuntimeError unless generate() and the hand-stepped loop compute the same thing: in float32 the same
    tokens; in bfloat16, where the two kernels round differently and near-ties may flip, the same first-step logits."""
    if args.dtype == "float32":
        tokens = generate(model, prompt, CHECK_TOKENS)[0, PROMPT_LEN:].tolist()
        bare_tokens = greedy_bare(bare, prompt, CHECK_TOKENS)[0, PROMPT_LEN:].tolist()
        pairs = list(itertools.zip_longest(tokens, bare_tokens))  # None where one side stopped early
        first = next((i for i, (token, bare_token) in enumerate(pairs) if token != bare_token), None)
        if first is not None:
            raise RuntimeError(
                "generate() and the hand-stepped loop chose different tokens in float32, first at new token "
                f"{first}: {pairs[first][0]} vs {pairs[first][1]}"
            )
        return
    output = model.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=1,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
    )
    logits, bare_logits = output.logits[0].float(), bare(prompt, last_only=True)[0][:, -1].float()
    # bfloat16 keeps about 3 significant digits. The absolute tolerance scales with the largest logit: at init the
    # logits are about 0.01 in size, so a fixed one of 2e-2 would accept any logits at all.
    try:
        torch.testing.assert_close(logits, bare_logits, rtol=2e-2, atol=2e-2 * bare_logits.abs().max().item())
    except AssertionError as error:
        raise RuntimeError(
            f"generate() and the hand-stepped loop disagree on the first step's logits in bfloat16: {error}"
        ) from None


@torch.inference_mode()
def bench_generation(args: argparse.Namespace) -> Result:
    model = build_model(args).eval()
    bare = BareLSTM.from_model(model)
    prompt = random_ids(args, 1, PROMPT_LEN)
    check_generation(args, model, bare, prompt)
    model_times, bare_times = interleaved(
        lambda: generate(model, prompt, args.gen_tokens),
        lambda: greedy_bare(bare, prompt, args.gen_tokens),
        args.repeats,
        args.device,
    )
    return as_result("generate greedy", args.gen_tokens, model_times, bare_times, target=0.5)


@torch.inference_mode()
def bench_cache(args: argparse.Namespace) -> Result:
    model = build_model(args).eval()
    prompt = random_ids(args, 1, PROMPT_LEN)
    # Without the cache every step re-reads the whole sequence, so a run costs O(n^2) and dominates the script's
    # runtime: warm up with short runs, and take about half the repeats (the margin is wide enough for that).
    generate(model, prompt, 32), generate(model, prompt, 32, use_cache=False)
    model_times, uncached_times = interleaved(
        lambda: generate(model, prompt, args.cache_tokens),
        lambda: generate(model, prompt, args.cache_tokens, use_cache=False),
        (args.repeats + 1) // 2,
        args.device,
        warm_up=False,
    )
    return as_result("cache speed-up", args.cache_tokens, model_times, uncached_times, target=10.0)


def print_table(results: list[Result]) -> None:
    print(f"{'benchmark':<16} {'model tok/s':>12} {'baseline tok/s':>15} {'ratio':>8} {'target':>8}  result")
    for r in results:
        target = f">= {r.target:g}"
        result = "PASS" if r.passed else "FAIL"
        print(f"{r.name:<16} {r.model:>12.1f} {r.baseline:>15.1f} {r.ratio:>8.3f} {target:>8}  {result}")


def main() -> None:
    args = parse_args()
    transformers.logging.set_verbosity_error()  # generate()'s advice on generation flags would break up the table
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    config = make_config(args)
    print(
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"transformers={transformers.__version__}\n"
        f"model: vocab={config.vocab_size} embedding={config.embedding_dim} hidden={config.hidden_size} "
        f"layers={config.num_layers}; train batch={args.batch_size}x{args.seq_len}, {args.train_steps} step(s) "
        f"per repeat; generate {args.gen_tokens} / {args.cache_tokens} new tokens; repeats={args.repeats}"
    )
    results = [bench_training(args), bench_generation(args), bench_cache(args)]
    print_table(results)
    elapsed = time.perf_counter() - start
    print(f"ratio = median over repeats of model/baseline timed back to back; total {elapsed:.1f} s")
    if args.quick:
        print("--quick: sizes too small for the targets to mean anything; this mode only checks that the script runs")
    if args.out:
        report = {
            "args": vars(args),
            "results": [{**asdict(r), "passed": r.passed} for r in results],
            "seconds": elapsed,
        }
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
        print(f"figures written to {args.out}")
    if not all(math.isfinite(r.ratio) and r.ratio > 0 for r in results):
        raise SystemExit("a ratio is not a finite positive number")


if __name__ == "__main__":
    main()
