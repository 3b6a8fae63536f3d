"""Speed of LSTMForCausalLM against bare PyTorch loops of the same sizes, and of the ways the project trains and
scores it against the plain alternatives, as ratios measured in one run.

    python scripts/bench.py                          # default sizes, cuda if available else cpu
    python scripts/bench.py --quick                  # a few seconds: the smoke test runs this
    python scripts/bench.py --device cuda --dtype bfloat16 --out bench.json

Each row is a ratio (model side / baseline side, so higher is better) with its target; LoRA share is the one figure
with an upper bound:
  train step        training tokens/s (forward + backward + AdamW step) vs nn.Embedding + nn.LSTM + nn.Linear with
                    F.cross_entropy, built from the model's own weights                         target >= 0.95
  padded step       the same on a right-padded batch with its attention mask (rows of T/2 to T tokens, pads left out
                    of the loss), as fine-tuning's batches are, vs the bare loop run dense on it  target >= 0.95
  SFT step          fine-tuning tokens/s through the project's SFT trainer (training.factuality_trainer's
                    compute_loss: TRL's fused LM head, on the labelled positions only) on a padded batch of the
                    world's questions and answers, vs the model's own loss (the head on every position) on the same
                    batch, each with a backward and an AdamW step                               target >= 1
  SFT head          the same step vs TRL's own SFTTrainer, whose fused head projects every position off CUDA
                                                                                                target >= 1.2
  generate greedy   model.generate() tokens/s (batch 1, cache on) vs a hand-stepped nn.LSTM loop  target >= 0.5
  cache speed-up    generate() tokens/s with the cache vs generate(use_cache=False)             target >= 10
  trainer pretrain  pre-training tokens/s through transformers.Trainer set up as modeling/training/pretraining.py does
                    (DataCollatorForLanguageModeling, the model's loss, the Trainer's AdamW, gradient clipping,
                    scheduler) vs a bare loop over the same model, tokens per step, optimizer and clipping
                                                                                                target >= 0.85
  LoRA step         fine-tuning tokens/s with PEFT LoRA as training.finetuning.lora_config makes it (r=8, alpha 16,
                    the LSTM's weight_ih_l0 / weight_hh_l0) vs full fine-tuning of the same model: a LoRA step may
                    take at most 1.2x a full step                                               target >= 1/1.2
  LoRA share        LoRA's trainable parameters / all parameters at these sizes                 target <= 0.05
  merged scoring    questions/s answered by modeling.scoring.answer_questions (batched greedy answers to the world's
                    questions) with the LoRA adapter merged (merge_and_unload) vs the PeftModel that applies it in
                    every forward                                                               target >= 1

A ratio against a baseline that computes something else means nothing, so the benchmarks check that both sides
agree, and the script stops with a RuntimeError if they do not: the same loss before training; in float32 the same
32 greedy tokens, in bfloat16 (where the two kernels round differently and near-ties may flip) the same first-step
logits to within 2% of the largest; the Trainer's logged first-step loss and gradient norm equal the bare loop's;
a fresh LoRA model (a no-op adapter) gives the full model's logits; the merged model gives the PeftModel's answers
and logits (within 1e-5 in float32; in bfloat16 the logits within 2% of the largest).

Machines are noisy, so model and baseline runs alternate (the order flips every repeat), both are warmed up first,
and each ratio is the median over repeats of model / baseline timed back to back. The model and baseline columns are
the medians of their own runs. The Trainer side is timed from its on_train_begin to its on_train_end callback: each
train() call first runs a gc.collect of the whole process (accelerate's free_memory, about 0.2 s here), which a real
run pays once. The default sizes take a few minutes on 2 CPU cores, most of it in the uncached generate runs
(quadratic in length) and the Trainer runs. On a shared CPU, --threads 1 keeps other jobs from stalling the OpenMP
threads.
"""

import argparse
import copy
import itertools
import json
import math
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import datasets
import torch
import torch.nn.functional as F
import transformers
from peft import PeftModel, get_peft_model
from torch import nn
from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer, TrainerCallback, TrainingArguments
from trl import SFTConfig, SFTTrainer

from modeling import LSTMConfig, LSTMForCausalLM, LSTMTokenizer, train_tokenizer
from modeling.scoring import answer_questions
from modeling.timing import interleaved, synchronize
from modeling.training.factuality_trainer import FactualitySFTTrainer
from modeling.training.finetuning import DEFAULTS as FINETUNE_DEFAULTS
from modeling.training.finetuning import FinetuneArguments, lora_config
from modeling.training.pretraining import DEFAULTS as PRETRAIN_DEFAULTS
from modeling.world import PRETRAIN_SPLIT, WorldConfig, generate_world, to_dataset_dict

PROMPT_LEN = 16
CHECK_TOKENS = 32  # new tokens generate() and the hand-stepped loop must agree on in float32
PAD_ID, EOS_ID = 0, 1  # like the project's tokenizer; prompts avoid both
MIN_VOCAB_SIZE = 258  # the byte-level tokenizer of the scoring benchmark: 2 special tokens + 256 bytes
# The pre-training settings the Trainer benchmark takes over from training/pretraining.py (the rest are about data,
# evaluation and saving, which a benchmark of training steps leaves out).
PRETRAIN_OPTIMIZATION = ("learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm")


@dataclass
class Result:
    name: str
    model: float  # the model side's figure in `unit`; a speed from the median of its runs
    baseline: float  # the baseline's, likewise
    ratio: float  # median over repeats of model / baseline speed, timed back to back
    target: float
    model_seconds: list[float]  # every timed run, to judge the noise (none for a count)
    baseline_seconds: list[float]
    unit: str = "tok/s"
    at_most: bool = False  # the target is an upper bound (a share of parameters), not a lower one

    @property
    def passed(self) -> bool:
        return self.ratio <= self.target if self.at_most else self.ratio >= self.target


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, help="training batch (default 16; --quick: 4)")
    parser.add_argument("--seq-len", type=int, help="training sequence length (default 128; --quick: 32)")
    parser.add_argument("--vocab-size", type=int, help=f"default 2000; --quick: 320; at least {MIN_VOCAB_SIZE}")
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
    for name, sizes in dict(batch_size=(16, 4), seq_len=(128, 32), vocab_size=(2000, 320), repeats=(5, 2)).items():
        if getattr(args, name) is None:
            setattr(args, name, sizes[args.quick])
    args.train_steps = 1 if args.quick else 2  # timed training steps per repeat
    # Timed Trainer steps per repeat (and per train() call): enough that its per-call bookkeeping weighs as in a run.
    args.trainer_steps = 2 if args.quick else 8
    args.gen_tokens = 32 if args.quick else 256
    args.cache_tokens = 64 if args.quick else 512
    # Questions answered per repeat by the scoring benchmark, in batches of 64 (the scoring default), and their
    # greedy answer length (24: the scoring default too).
    args.questions = 8 if args.quick else 128
    args.answer_tokens = 8 if args.quick else 24
    for name in ("batch_size", "seq_len", "vocab_size", "repeats", "threads"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.vocab_size < MIN_VOCAB_SIZE:
        parser.error(
            f"--vocab-size must be at least {MIN_VOCAB_SIZE} (the byte-level tokenizer's size), got {args.vocab_size}"
        )
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


def as_result(
    name: str,
    work: float,
    model_times: list[float],
    baseline_times: list[float],
    target: float,
    unit: str = "tok/s",
) -> Result:
    """`work` tokens (or other units of work) were processed per run; figures are units per second."""
    return Result(
        name=name,
        model=work / statistics.median(model_times),
        baseline=work / statistics.median(baseline_times),
        ratio=statistics.median(b / m for m, b in zip(model_times, baseline_times, strict=True)),
        target=target,
        model_seconds=model_times,
        baseline_seconds=baseline_times,
        unit=unit,
    )


def padded_ids(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A right-padded batch as the SFT collator makes it: `(ids, attention_mask, labels)`, each (B, T), every row a
    different length from T/2 to T, with labels -100 at the pads."""
    ids = random_ids(args, args.batch_size, args.seq_len)
    lengths = torch.linspace(args.seq_len // 2, args.seq_len, args.batch_size).long().to(args.device)
    mask = (torch.arange(args.seq_len, device=args.device)[None] < lengths[:, None]).long()
    return ids.masked_fill(mask == 0, PAD_ID), mask, ids.masked_fill(mask == 0, -100)


def bench_training(args: argparse.Namespace, padded: bool = False) -> Result:
    """The model's training step against the bare loop's on the same batch. `padded`: a right-padded batch with its
    attention mask (`padded_ids`), which the bare loop runs dense and whose pads it leaves out of the loss: the speed
    of a fine-tuning batch, whose rows differ in length."""
    model = build_model(args).train()
    bare = BareLSTM.from_model(model)
    if padded:
        ids, mask, labels = padded_ids(args)
    else:
        ids = random_ids(args, args.batch_size, args.seq_len)
        mask, labels = None, ids

    def bare_loss() -> torch.Tensor:
        logits, _ = bare(ids)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)

    # Same function before any step: same loss from the same weights (the model shifts labels inside forward).
    with torch.no_grad():
        model_loss, expected = model(input_ids=ids, attention_mask=mask, labels=labels).loss, bare_loss()
    if not torch.allclose(model_loss.float(), expected.float(), rtol=1e-2 if args.dtype != "float32" else 1e-4):
        raise RuntimeError(f"model and baseline disagree before training: loss {model_loss} vs {expected}")

    model_opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    bare_opt = torch.optim.AdamW(bare.parameters(), lr=1e-3)
    n_params = sum(p.numel() for p in model.parameters())
    if n_params != sum(p.numel() for p in bare.parameters()):
        raise RuntimeError("model and baseline have different parameter counts")

    def model_steps() -> None:
        for _ in range(args.train_steps):
            model_opt.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            model_opt.step()

    def bare_steps() -> None:
        for _ in range(args.train_steps):
            bare_opt.zero_grad(set_to_none=True)
            bare_loss().backward()
            bare_opt.step()

    model_times, bare_times = interleaved(model_steps, bare_steps, repeats=args.repeats, device=args.device)
    tokens = args.train_steps * args.batch_size * args.seq_len
    return as_result("padded step" if padded else "train step", tokens, model_times, bare_times, target=0.95)


def sft_rows(args: argparse.Namespace) -> tuple[LSTMTokenizer, datasets.Dataset]:
    """The world's tokenizer and `args.batch_size` of its questions with their answers, as prompt/completion rows."""
    tokenizer, _ = world_tokenizer_and_prompts(args)
    rows = [row for name, split in world_splits(args).items() if name != PRETRAIN_SPLIT for row in split]
    rows = list(itertools.islice(itertools.cycle(rows), args.batch_size))
    dataset = datasets.Dataset.from_dict(
        {"prompt": [r["prompt"] for r in rows], "completion": [r["answer"] for r in rows]}
    )
    return tokenizer, dataset


def sft_trainer(
    args: argparse.Namespace,
    output_dir: str,
    trainer_class: type[SFTTrainer],
    rows: tuple[LSTMTokenizer, datasets.Dataset],
) -> SFTTrainer:
    """A `trainer_class` (TRL's `SFTTrainer` or the project's) over a fresh model of the benchmark's sizes and the
    prompt/completion `rows` of `sft_rows`."""
    tokenizer, dataset = rows
    settings = {k: FINETUNE_DEFAULTS[k] for k in ("activation_checkpointing", "bf16", "max_length")}
    sft_config = SFTConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch_size,
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        use_cpu=args.device == "cpu",
        **settings,
    )
    trainer = trainer_class(model=build_model(args), args=sft_config, train_dataset=dataset, processing_class=tokenizer)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what train() sets before its first step
    return trainer


def bench_sft(args: argparse.Namespace) -> list[Result]:
    """The SFT step and SFT head rows: the project's SFT trainer's training step on one batch of `sft_rows`,
    padded and labelled by TRL's collator (the answer and its end labelled, the prompt and the padding not), against
    the model's own loss and against TRL's own `SFTTrainer`, each over a model with the same weights."""
    with tempfile.TemporaryDirectory() as output_dir:
        rows = sft_rows(args)
        ours = sft_trainer(args, output_dir, FactualitySFTTrainer, rows)
        trl_own = sft_trainer(args, output_dir, SFTTrainer, rows)
        plain = build_model(args).train()
        batch = ours._prepare_inputs(next(iter(ours.get_train_dataloader())))
        losses = {
            "ours": lambda: ours.compute_loss(ours.model, dict(batch)),
            "trl": lambda: trl_own.compute_loss(trl_own.model, dict(batch)),
            "own": lambda: plain(**batch).loss,
        }
        # The same loss from the same weights on every side: the mean over the labelled tokens.
        with torch.no_grad():
            values = {side: loss().float() for side, loss in losses.items()}
        for side in ("trl", "own"):
            if not torch.allclose(values["ours"], values[side], rtol=1e-2 if args.dtype != "float32" else 1e-4):
                raise RuntimeError(f"the SFT trainer's loss and the {side} loss disagree: {values}")
        models = {"ours": ours.model, "trl": trl_own.model, "own": plain}
        optimizers = {side: torch.optim.AdamW(model.parameters(), lr=1e-3) for side, model in models.items()}

        def steps(side: str) -> Callable[[], None]:
            def run() -> None:
                for _ in range(args.train_steps):
                    optimizers[side].zero_grad(set_to_none=True)
                    losses[side]().backward()
                    optimizers[side].step()

            return run

        tokens = args.train_steps * batch["input_ids"].numel()
        results = []
        for name, baseline, target in (("SFT step", "own", 1.0), ("SFT head", "trl", 1.2)):
            times = interleaved(steps("ours"), steps(baseline), repeats=args.repeats, device=args.device)
            results.append(as_result(name, tokens, *times, target=target))
    return results


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
        repeats=args.repeats,
        device=args.device,
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
        repeats=(args.repeats + 1) // 2,
        device=args.device,
        warm_up=False,
    )
    return as_result("cache speed-up", args.cache_tokens, model_times, uncached_times, target=10.0)


def world_splits(args: argparse.Namespace) -> datasets.DatasetDict:
    """The splits of a small world (40 people) of the benchmark's seed."""
    return to_dataset_dict(generate_world(WorldConfig(num_people=40, seed=args.seed)))


def world_tokenizer_and_prompts(args: argparse.Namespace) -> tuple[LSTMTokenizer, list[str]]:
    """A tokenizer of at most --vocab-size tokens trained on a small world's biographies (pad and eos ids 0 and 1, like
    the benchmark's models), and `args.questions` of that world's questions (repeated when more are asked for)."""
    splits = world_splits(args)
    tokenizer = train_tokenizer(list(splits[PRETRAIN_SPLIT]["text"]), args.vocab_size)
    prompts = [prompt for name, split in splits.items() if name != PRETRAIN_SPLIT for prompt in split["prompt"]]
    return tokenizer, list(itertools.islice(itertools.cycle(prompts), args.questions))


def check_same_logits(what: str, logits: torch.Tensor, expected: torch.Tensor, dtype: str) -> None:
    """Raises RuntimeError unless `logits` equal `expected`: in float32 within 1e-5; in bfloat16 within 2% of each
    plus 2% of the largest (a fixed tolerance would accept anything next to logits of about 0.01 at init)."""
    logits, expected = logits.float(), expected.float()
    if dtype == "float32":
        rtol, atol = 0.0, 1e-5
    else:
        rtol, atol = 2e-2, 2e-2 * expected.abs().max().item()
    try:
        torch.testing.assert_close(logits, expected, rtol=rtol, atol=atol)
    except AssertionError as error:
        raise RuntimeError(f"{what} disagree on the logits in {dtype}: {error}") from None


class TrainLoopClock(TrainerCallback):
    """Seconds of the Trainer's training loop in one train() call, from on_train_begin to on_train_end: every step's
    batch, forward, backward, clipping, optimizer and scheduler step and callbacks, without the call's set-up."""

    def __init__(self, device: str):
        self.device, self.start, self.seconds = device, math.nan, math.nan

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        synchronize(self.device)
        self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self.start


def pretrain_arguments(args: argparse.Namespace, output_dir: str, max_steps: int, **overrides) -> TrainingArguments:
    """Trainer settings for `max_steps` steps of `args.batch_size` sequences: training/pretraining.py's optimization
    settings; no evaluation, checkpoints, reports or progress bar; logging off unless `overrides` turn it on."""
    settings = dict(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=args.batch_size,
        **{name: PRETRAIN_DEFAULTS[name] for name in PRETRAIN_OPTIMIZATION},
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        use_cpu=args.device == "cpu",
    )
    return TrainingArguments(**{**settings, **overrides})


def pretrain_trainer(
    model: LSTMForCausalLM, tokenizer: LSTMTokenizer, dataset: datasets.Dataset, training_args: TrainingArguments
) -> Trainer:
    """A Trainer as modeling/training/pretraining.py builds it: the collator pads on the right and makes the labels."""
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every train() call's metrics into the table
    return trainer


def bare_pretrain_step(
    model: LSTMForCausalLM, optimizer: torch.optim.Optimizer, ids: torch.Tensor, max_grad_norm: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a hand-written pre-training loop on `ids` (B, T): the model's loss, backward, gradient clipping,
    optimizer step. Returns the loss and the gradient norm before clipping, the two figures the Trainer logs."""
    optimizer.zero_grad(set_to_none=True)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    return loss.detach(), grad_norm


def check_first_step(args: argparse.Namespace, logged: dict, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    """Raises RuntimeError unless the Trainer's logged first step and the bare loop's have the same loss (the forward:
    model, labels, reduction) and the same gradient norm before clipping (the backward: which weights train, how).

    At init the loss of any random batch is within a few 1e-5 of log(vocab size), so only float32's tolerance tells
    other data apart; in bfloat16 the check catches gross differences only."""
    # float32: the Trainer shuffles the batch's rows, which only reorders the sums. bfloat16 keeps about 3 digits.
    tolerances = dict(loss=1e-5, grad_norm=1e-4) if args.dtype == "float32" else dict(loss=1e-2, grad_norm=2e-2)
    for name, bare_value in (("loss", loss.item()), ("grad_norm", grad_norm.item())):
        if not math.isclose(logged[name], bare_value, rel_tol=tolerances[name]):
            raise RuntimeError(
                f"the Trainer and the bare loop disagree on the first step's {name}: {logged[name]} vs {bare_value}"
            )


def bench_trainer_pretraining(args: argparse.Namespace) -> Result:
    tokenizer, _ = world_tokenizer_and_prompts(args)
    # One train() call's data: `trainer_steps` batches of distinct sequences, no padding, so every step has
    # batch x seq_len tokens on both sides (the ids avoid the pad id, so the collator's labels are the ids).
    ids = random_ids(args, args.trainer_steps * args.batch_size, args.seq_len)
    dataset = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
    trainer_model, bare_model = build_model(args).train(), build_model(args).train()
    with tempfile.TemporaryDirectory() as output_dir:
        training_args = pretrain_arguments(args, output_dir, args.trainer_steps)
        # The Trainer's own optimizer (fused AdamW where torch has it) with its settings, over every parameter.
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(training_args, bare_model)
        bare_optimizer = optimizer_cls(
            bare_model.parameters(), weight_decay=training_args.weight_decay, **optimizer_kwargs
        )

        # 1. The same first step from the same weights on the same sequences: one logged Trainer step on the first
        #    batch against the bare loop's first step.
        check_args = pretrain_arguments(args, output_dir, 1, logging_strategy="steps", logging_steps=1)
        check = pretrain_trainer(trainer_model, tokenizer, dataset.select(range(args.batch_size)), check_args)
        check.train()
        first = bare_pretrain_step(bare_model, bare_optimizer, ids[: args.batch_size], training_args.max_grad_norm)
        check_first_step(args, check.state.log_history[0], *first)

        # 2. Time train() calls of `trainer_steps` steps (one epoch each) against as many bare steps.
        clock = TrainLoopClock(args.device)
        trainer = pretrain_trainer(trainer_model, tokenizer, dataset, training_args)
        trainer.add_callback(clock)

        def trainer_steps() -> float:
            trainer.train()
            return clock.seconds

        def bare_steps() -> None:
            for batch in ids.split(args.batch_size):
                bare_pretrain_step(bare_model, bare_optimizer, batch, training_args.max_grad_norm)

        trainer_times, bare_times = interleaved(trainer_steps, bare_steps, repeats=args.repeats, device=args.device)
    tokens = args.trainer_steps * args.batch_size * args.seq_len
    return as_result("trainer pretrain", tokens, trainer_times, bare_times, target=0.85)


def bench_lora(args: argparse.Namespace) -> list[Result]:
    """The LoRA step row and the LoRA share row."""
    full = build_model(args).train()
    base = build_model(args)
    lora = get_peft_model(base, lora_config(FinetuneArguments(use_lora=True), base)).train()
    ids = random_ids(args, args.batch_size, args.seq_len)
    # A fresh adapter is a no-op (its B matrices are zero), so the LoRA model computes the full model's logits: both
    # sides run the same model and differ only in what they train.
    with torch.no_grad():
        check_same_logits(
            "a fresh LoRA model and the full model", lora(input_ids=ids).logits, full(input_ids=ids).logits, args.dtype
        )
    # A PeftModel passes num_parameters on to the model it wraps, whose modules now hold the adapters too.
    trainable, total = lora.num_parameters(only_trainable=True), lora.num_parameters()
    optimizers = {
        model: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3) for model in (lora, full)
    }

    def steps(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            for _ in range(args.train_steps):
                optimizers[model].zero_grad(set_to_none=True)
                model(input_ids=ids, labels=ids).loss.backward()
                optimizers[model].step()

        return run

    lora_times, full_times = interleaved(steps(lora), steps(full), repeats=args.repeats, device=args.device)
    tokens = args.train_steps * args.batch_size * args.seq_len
    share = Result(
        name="LoRA share",
        model=trainable,
        baseline=total,
        ratio=trainable / total,
        target=0.05,
        model_seconds=[],
        baseline_seconds=[],
        unit="params",
        at_most=True,
    )
    return [as_result("LoRA step", tokens, lora_times, full_times, target=1 / 1.2), share]


def merged_copy(model: PeftModel) -> LSTMForCausalLM:
    """A plain model with the adapter merged into its weights; `model` is left as it is."""
    return copy.deepcopy(model).merge_and_unload()


def check_merged(
    args: argparse.Namespace, merged: LSTMForCausalLM, peft_model: PeftModel, tokenizer: LSTMTokenizer, prompts: list
) -> None:
    """Raises RuntimeError unless the merged model gives the PeftModel's answers to `prompts` and its logits on them
    (see check_same_logits). In bfloat16, where the merged weights round once and near-ties may flip, only the
    logits."""
    if args.dtype == "float32":
        answers = [
            answer_questions(m, tokenizer, prompts, max_new_tokens=args.answer_tokens)[0] for m in (merged, peft_model)
        ]
        first = next((i for i, (a, b) in enumerate(zip(*answers, strict=True)) if a != b), None)
        if first is not None:
            raise RuntimeError(
                f"the merged model and the PeftModel answer differently, first at question {first}: "
                f"{answers[0][first]!r} vs {answers[1][first]!r}"
            )
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left").to(args.device)
    with torch.no_grad():
        check_same_logits(
            "the merged model and the PeftModel", merged(**batch).logits, peft_model(**batch).logits, args.dtype
        )


def bench_merged_scoring(args: argparse.Namespace) -> Result:
    tokenizer, prompts = world_tokenizer_and_prompts(args)
    base = build_model(args)
    config = lora_config(FinetuneArguments(use_lora=True), base)
    config.init_lora_weights = False  # a fresh adapter is a no-op, which any merge would reproduce
    peft_model = get_peft_model(base, config).eval()
    merged = merged_copy(peft_model).eval()
    check_merged(args, merged, peft_model, tokenizer, prompts)

    def answering(model: nn.Module) -> Callable[[], object]:
        return lambda: answer_questions(model, tokenizer, prompts, max_new_tokens=args.answer_tokens)

    merged_times, peft_times = interleaved(
        answering(merged), answering(peft_model), repeats=args.repeats, device=args.device
    )
    return as_result("merged scoring", args.questions, merged_times, peft_times, target=1.0, unit="questions/s")


def print_table(results: list[Result]) -> None:
    print(f"{'benchmark':<16} {'unit':<11} {'model':>12} {'baseline':>12} {'ratio':>8} {'target':>9}  result")
    for r in results:
        target = f"{'<=' if r.at_most else '>='} {r.target:.3g}"
        digits = 0 if r.unit == "params" else 1
        result = "PASS" if r.passed else "FAIL"
        print(
            f"{r.name:<16} {r.unit:<11} {r.model:>12.{digits}f} {r.baseline:>12.{digits}f} {r.ratio:>8.3f} "
            f"{target:>9}  {result}"
        )


def main() -> None:
    args = parse_args()
    transformers.logging.set_verbosity_error()  # generate()'s advice on generation flags would break up the table
    # The Trainer and PEFT call transformers' own deprecated `is_gradient_checkpointing`; nothing to act on here.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    config = make_config(args)
    print(
        f"device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} torch={torch.__version__} "
        f"transformers={transformers.__version__}\n"
        f"model: vocab={config.vocab_size} embedding={config.embedding_dim} hidden={config.hidden_size} "
        f"layers={config.num_layers}; train batch={args.batch_size}x{args.seq_len}, {args.train_steps} step(s) "
        f"per repeat ({args.trainer_steps} through the Trainer); generate {args.gen_tokens} / {args.cache_tokens} new "
        f"tokens; answer {args.questions} questions x {args.answer_tokens} tokens; repeats={args.repeats}"
    )
    results = [
        bench_training(args),
        bench_training(args, padded=True),
        *bench_sft(args),
        bench_generation(args),
        bench_cache(args),
        bench_trainer_pretraining(args),
        *bench_lora(args),
        bench_merged_scoring(args),
    ]
    print_table(results)
    elapsed = time.perf_counter() - start
    print(
        "ratio = median over repeats of model/baseline speed timed back to back (LoRA share: trainable/all); "
        f"total {elapsed:.1f} s"
    )
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
