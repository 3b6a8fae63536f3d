"""Supervised fine-tuning (SFT) of a pre-trained model (our LSTM, or any transformers causal LM) on prompt/completion
pairs with TRL's `SFTTrainer`, either in full or with LoRA adapters: by default on the LSTM's own weight matrices, or
on a transformer's attention and MLP projections (see `modeling.training.architectures`).

The data are prompt/completion pairs, the convention TRL uses: the world's questions drawn by `draw_finetune_set`
(any size, any share of unknown people, with or without "I don't know" for them), or the user's JSON Lines with
`prompt` and `completion` fields. `SFTTrainer` tokenizes them, appends the eos token to each completion, takes the
loss on the completion and its eos only (the model must learn to stop), and pads each batch; nothing of that is
written here.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback, IntervalStrategy, PreTrainedModel
from transformers.pytorch_utils import Conv1D
from trl import SFTConfig

from ..adapters import BASE_MODEL_FILE, base_model_record, load_adapter
from ..checkpoints import save_atomically
from ..lstm.modeling_lstm import check_tokenizer_fits
from ..run_config import RunArguments
from ..run_folder import prepare_output_dir, write_run_record
from ..threads import set_num_threads
from ..world import (
    KNOWLEDGE_BASE_FILE,
    KNOWLEDGE_CATEGORIES,
    PRETRAIN_SPLIT,
    draw_finetune_set,
    load_world,
    load_world_datasets,
    qa_split_name,
)
from .architectures import check_fits_positions, default_lora_target_modules, default_lora_target_parameters
from .console import factuality_summary, use_console_progress
from .defaults import COMMON_DEFAULTS, check_trainer_settings
from .factuality_trainer import FIGURES, FactualitySFTTrainer
from .kl_penalty import KL_POSITIONS
from .process_exit import end_run


@dataclass
class FinetuneArguments(RunArguments):
    """What to fine-tune, on what, and how (full or LoRA). Trainer settings live in `SFTConfig`."""

    model_dir: str = field(default="runs/pretrain/model", metadata={"help": "pre-trained model folder"})
    tokenizer_dir: str | None = field(default=None, metadata={"help": "tokenizer folder; default: model_dir's"})
    world_dir: str | None = field(
        default="runs/pretrain/world", metadata={"help": "world whose questions to draw (unless data_file is given)"}
    )
    data_file: str | None = field(
        default=None, metadata={"help": "JSON Lines with `prompt` and `completion` fields, instead of the world"}
    )
    finetune_size: int = field(default=300, metadata={"help": "questions drawn from the world's fine-tune people"})
    unknown_fraction: float = field(default=0.5, metadata={"help": "share of those about unknown people"})
    abstain_on_unknown: bool = field(
        default=False, metadata={"help": 'answer questions about unknown people with " I don\'t know"'}
    )
    draw_seed: int = field(default=0, metadata={"help": "seed of the draw from the world"})
    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of every weight"})
    adapter_dir: str | None = field(
        default=None, metadata={"help": "saved LoRA adapter of model_dir to train on (instead of a new one)"}
    )
    lora_r: int = 8
    lora_alpha: int = 16
    # None: the architecture's default (see `modeling.training.architectures`), decided when the model is loaded.
    lora_target_parameters: list[str] | None = field(
        default=None,
        metadata={
            "help": "weight matrices that get adapters; default: the LSTM's weight_ih_l0 and weight_hh_l0 "
            "(input-to-hidden, hidden-to-hidden, in every layer), none of a transformer"
        },
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "modules that get adapters; default: none of the LSTM (add 'embeddings' of a model whose head is "
            "not tied to them), a transformer's attention and MLP projections (gpt2: c_attn, c_proj, c_fc)"
        },
    )
    factuality_sets: list[str] = field(
        default_factory=lambda: ["finetune", "qa_known_heldout", "qa_unknown_heldout"],
        metadata={
            "help": "question sets scored at each evaluation (world data only): 'finetune' (the fine-tune set against "
            "its own targets) or names of the world's QA splits"
        },
    )
    factuality_max_questions: int = field(default=300, metadata={"help": "questions scored per set, at most"})
    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "weight of a KL penalty toward the pre-trained model, KL(p_pretrained || p_finetuned) per token, "
            "added to the SFT loss (modeling/training/kl_penalty.py); 0: none"
        },
    )
    kl_positions: str = field(
        default="completion",
        metadata={"help": "where the KL penalty applies: 'completion' (the answer tokens), 'prompt' or 'all'"},
    )
    replay_fraction: float = field(
        default=0.0,
        metadata={
            "help": "share of the training examples that are pre-training documents of the world (biographies), "
            "replayed as completions of an empty prompt; in [0, 1); 0: none"
        },
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "stop after this many evaluations without a better metric_for_best_model (transformers' "
            "EarlyStoppingCallback; needs eval_strategy and metric_for_best_model, and load_best_model_at_end to keep "
            "the best model rather than the last)"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kl_coef < 0:
            raise ValueError(f"FinetuneArguments.kl_coef is {self.kl_coef}; allowed: a weight >= 0")
        if self.kl_positions not in KL_POSITIONS:
            raise ValueError(f"FinetuneArguments.kl_positions is {self.kl_positions!r}; allowed: one of {KL_POSITIONS}")
        if not 0 <= self.replay_fraction < 1:
            raise ValueError(f"FinetuneArguments.replay_fraction is {self.replay_fraction}; allowed: a share in [0, 1)")


# The embedded default; a config file in configs/ and flags override it.
DEFAULTS = dict(
    COMMON_DEFAULTS,
    output_dir="runs/finetune",
    num_train_epochs=20,
    per_device_train_batch_size=16,
    # per_device_eval_batch_size=64 (COMMON_DEFAULTS) is also the batch of the factuality evaluations' generation:
    # the Trainer's default of 8 made evaluating the default study's question sets take most of its time.
    learning_rate=3e-3,
    lr_scheduler_type="constant",
    max_length=128,
    # TRL turns gradient (activation) checkpointing on by default; a small LSTM needs no memory saving, and it
    # costs a re-run of every layer in the backward pass. (`gradient_checkpointing` is the name transformers 5.24
    # deprecates.)
    activation_checkpointing=False,
    # TRL also turns on bfloat16 mixed precision by default, and accelerate then keeps the trained model's forward
    # under autocast: its logits came out 0.5% off those of the same weights in float32 (seen after a CPU run).
    # Exact float32 is the default here; --bf16 true on a GPU that has it.
    bf16=False,
    # A resumed run restores its callbacks' state (e.g. the early-stopping patience count) and so goes on as the
    # interrupted run would have; transformers leaves this off.
    restore_callback_states_from_checkpoint=True,
)


def load_sft_dataset(args: FinetuneArguments) -> datasets.Dataset:
    """The prompt/completion pairs to fine-tune on: from `args.data_file` when given, else drawn from the world.

    Raises:
        ValueError: if neither source is given, the file is empty, or a line is not a JSON object with string
            `prompt` and `completion` fields (the message names the line).
    """
    if args.data_file is not None:
        rows = []
        with open(args.data_file, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{args.data_file}:{number} is not JSON: {err}") from None
                if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "completion")):
                    raise ValueError(
                        f"{args.data_file}:{number} needs string fields 'prompt' and 'completion', "
                        f"got {line.strip()!r:.120}"
                    )
                rows.append({"prompt": row["prompt"], "completion": row["completion"]})
        if not rows:
            raise ValueError(f"{args.data_file} holds no examples")
        return datasets.Dataset.from_list(rows)
    if args.world_dir is None:
        raise ValueError("Give world_dir (to draw the world's questions) or data_file (JSON Lines)")
    drawn = draw_finetune_set(
        load_world(args.world_dir),
        size=args.finetune_size,
        unknown_fraction=args.unknown_fraction,
        seed=args.draw_seed,
        abstain_on_unknown=args.abstain_on_unknown,
    )
    # The other columns (group, knowledge, ...) stay: scoring reads them, and SFTTrainer drops what it does not use.
    return drawn.rename_column("answer", "completion")


def run_inputs(args: FinetuneArguments) -> tuple[str | None, ...]:
    """What a fine-tuning reads (a model, tokenizer, adapter, data file or world): no overwrite may delete it."""
    return (args.model_dir, args.tokenizer_dir, args.adapter_dir, args.data_file, args.world_dir)


def with_replay(train_dataset: datasets.Dataset, args: FinetuneArguments, seed: int) -> datasets.Dataset:
    """`train_dataset` (prompt/completion rows) with pre-training documents of `args.world_dir` mixed in, so that
    they make up `args.replay_fraction` of the examples (rounded): replay (Zucchet et al. 2025, "How do language
    models learn facts?"). Each document is a completion of an empty prompt, so the loss covers every one of its
    tokens and its end, as in pre-training. Drawn without repeats with `seed`; the Trainer shuffles the mix.

    Raises:
        ValueError: without `world_dir`, or if the world has fewer documents than the share asks for.
    """
    if not args.replay_fraction:
        return train_dataset
    if args.world_dir is None:
        raise ValueError("FinetuneArguments.replay_fraction needs world_dir, whose pre-training documents it replays")
    count = round(len(train_dataset) * args.replay_fraction / (1 - args.replay_fraction))
    documents = load_world_datasets(args.world_dir)[PRETRAIN_SPLIT]
    if count > len(documents):
        raise ValueError(
            f"FinetuneArguments.replay_fraction is {args.replay_fraction}: {count} documents for {len(train_dataset)} "
            f"examples, but the world has {len(documents)}; allowed: a smaller share"
        )
    text = documents.shuffle(seed=seed).select(range(count))["text"]
    replay = datasets.Dataset.from_dict({"prompt": [""] * count, "completion": text})
    return datasets.concatenate_datasets([train_dataset.select_columns(["prompt", "completion"]), replay])


def lora_targets(args: FinetuneArguments, model_type: str) -> tuple[list[str], list[str]]:
    """The `(target_modules, target_parameters)` of a new adapter on a model of `model_type`: each as `args` names
    it, or the architecture's default when `args` leaves it None (see `modeling.training.architectures`).

    Raises:
        ValueError: if the default modules are needed and the model type has none.
    """
    modules, parameters = args.lora_target_modules, args.lora_target_parameters
    return (
        default_lora_target_modules(model_type) if modules is None else list(modules),
        default_lora_target_parameters(model_type) if parameters is None else list(parameters),
    )


def _is_targeted(module_name: str, target_modules: list[str]) -> bool:
    # PEFT's rule for a list of targets: the module's full name, or its name after a dot.
    return any(module_name == target or module_name.endswith(f".{target}") for target in target_modules)


def lora_config(args: FinetuneArguments, model: PreTrainedModel) -> LoraConfig | None:
    """PEFT's LoRA config for a new adapter on `model` (the plain model, before PEFT wraps it), on the targets of
    `lora_targets`; None for full fine-tuning or when `args.adapter_dir` gives the adapter."""
    if not args.use_lora or args.adapter_dir is not None:
        return None
    target_modules, target_parameters = lora_targets(args, model.config.model_type)
    # GPT-2's projections are transformers' Conv1D, which stores its weight (in, out), the transpose of nn.Linear's:
    # PEFT must transpose the adapter's update too (it would switch this on itself, warning once per layer).
    fan_in_fan_out = any(
        isinstance(module, Conv1D) for name, module in model.named_modules() if _is_targeted(name, target_modules)
    )
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        target_modules=target_modules,
        target_parameters=target_parameters,
        fan_in_fan_out=fan_in_fan_out,
        task_type="CAUSAL_LM",
    )


def check_lora_targets(target_modules: list[str], model: PreTrainedModel) -> None:
    """Refuse LoRA targets that would not train, or whose merge would change more than the adapter did.

    Raises:
        ValueError: for "lm_head": TRL's SFTTrainer takes the log-probabilities from `lm_head.weight` itself, so it
            refuses an adapter there that would never train; for the input embeddings (the LSTM's "embeddings",
            gpt2's "wte") of a model whose head is tied to them (`tie_word_embeddings`, the default): merging the
            adapter into the shared matrix would change the head too (the merged model's logits were 7e-3 off the
            adapter's in a test).
    """
    if "lm_head" in target_modules:
        raise ValueError(
            "lora_target_modules names 'lm_head', which TRL's SFTTrainer does not train (it takes the log-probs "
            "from lm_head.weight directly); adapt other layers, or the embeddings of an untied model"
        )
    embeddings = model.get_input_embeddings()
    name = next(name for name, module in model.named_modules() if module is embeddings)
    if _is_targeted(name, target_modules) and model.config.tie_word_embeddings:
        raise ValueError(
            f"lora_target_modules names the embeddings ({name}), but the model's head is tied to them "
            "(tie_word_embeddings): merging the adapter would change the head too. Adapt the embeddings of a model "
            "pre-trained untied."
        )


def loss_rows(splits: datasets.DatasetDict) -> datasets.Dataset:
    """The rows on which a run on the world's data takes its evaluation loss: the held-out known people's answers
    of the world's `splits`, as prompt/completion."""
    return splits[qa_split_name("known", "heldout")].rename_column("answer", "completion")


def world_evaluation_sets(
    args: FinetuneArguments, train_dataset: datasets.Dataset
) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
    """What the evaluations of a run on the world's data read: the rows whose loss they take (the held-out known
    people's answers, as prompt/completion) and the factuality sets of `args.factuality_sets` (each cut to
    `args.factuality_max_questions`; "finetune" is `train_dataset` itself).

    Raises:
        ValueError: for a factuality set that is neither "finetune" nor a split of the world.
    """
    splits = load_world_datasets(args.world_dir)
    factuality_sets = {}
    for name in args.factuality_sets:
        if name != "finetune" and name not in splits:
            raise ValueError(f"factuality_sets names {name!r}, which is neither 'finetune' nor a split of the world")
        rows = train_dataset.rename_column("completion", "answer") if name == "finetune" else splits[name]
        factuality_sets[name] = rows.select(range(min(len(rows), args.factuality_max_questions)))
    return loss_rows(splits), factuality_sets


def check_lora_settings(args: FinetuneArguments, model: PreTrainedModel) -> None:
    """Refuse LoRA targets that would not train or merge cleanly (see `check_lora_targets`) for a new adapter, and
    LoRA settings without `use_lora`.

    Raises:
        ValueError: naming the settings.
    """
    if args.use_lora and args.adapter_dir is None:  # a new adapter (a saved one brings its own targets)
        check_lora_targets(lora_targets(args, model.config.model_type)[0], model)
    elif not args.use_lora:
        lora_settings = ("adapter_dir", "lora_target_modules", "lora_target_parameters")
        named = [name for name in lora_settings if getattr(args, name) is not None]
        if named:
            verb = "is" if len(named) == 1 else "are"
            raise ValueError(f"{' and '.join(named)} {verb} set, but use_lora is not: set use_lora too")


def build_trainer(
    args: FinetuneArguments,
    sft_config: SFTConfig,
    train_dataset: datasets.Dataset | None = None,
    factuality_sets: dict[str, datasets.Dataset] | None = None,
    eval_dataset: datasets.Dataset | None = None,
) -> FactualitySFTTrainer:
    """An SFT trainer over the pre-trained model of `args.model_dir` (wrapped in a PeftModel with LoRA) and the
    data of `load_sft_dataset` (or `train_dataset`, prompt/completion rows). On world data its evaluations take the
    loss on `eval_dataset` and score `factuality_sets` (name -> QA rows; see `FactualitySFTTrainer`), by default
    those of `world_evaluation_sets`.

    Raises:
        ValueError: for a bad data source (see `load_sft_dataset`), a factuality set the world does not have, a
            tokenizer (`args.tokenizer_dir`, else the model's) or an adapter (`args.adapter_dir`) that does not fit
            the model, a `max_length` longer than the model can read, LoRA settings that would not train or merge
            cleanly (see `check_lora_settings`), early stopping without what it needs (see
            `check_early_stopping`), or a `metric_for_best_model` that can be undefined (AUROC).
    """
    if train_dataset is None:
        train_dataset = load_sft_dataset(args)
    if args.data_file is None and (eval_dataset is None or factuality_sets is None):
        world_eval, world_sets = world_evaluation_sets(args, train_dataset)
        eval_dataset = world_eval if eval_dataset is None else eval_dataset
        factuality_sets = world_sets if factuality_sets is None else factuality_sets
    # After the evaluation sets: the fine-tune set scored as "finetune" is the questions, not the replayed text.
    train_dataset = with_replay(train_dataset, args, sft_config.seed)
    model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(args.model_dir)
    # Our LSTM checks the tokenizer saved with it as it loads; a transformers model loads without a look.
    check_tokenizer_fits(model.config, args.tokenizer_dir or args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_dir or args.model_dir)
    if sft_config.max_length is not None:
        check_fits_positions(model.config, sft_config.max_length, "max_length (the longest fine-tuning example)")
    check_lora_settings(args, model)
    check_early_stopping(args, sft_config)
    # Before PEFT wraps the model: an adapter records the base weights it was trained on, so it never loads silently
    # onto another model.
    base_record = base_model_record(model) if args.use_lora else None
    peft_config = lora_config(args, model)
    if args.adapter_dir is not None:
        model = load_adapter(model, args.adapter_dir, is_trainable=True)
    trainer = FactualitySFTTrainer(
        model=model,
        args=sft_config,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        factuality_sets=factuality_sets,
        base_model_record=base_record,
        kl_coef=args.kl_coef,
        kl_positions=args.kl_positions,
    )
    check_not_truncated(trainer.train_dataset, tokenizer.eos_token_id, sft_config.max_length)
    use_console_progress(trainer, factuality_summary("finetune", list(trainer.factuality_sets)))
    if args.early_stopping_patience is not None:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=args.early_stopping_patience))
    return trainer


def check_finetuning(args: FinetuneArguments, sft_config: SFTConfig) -> None:
    """What a fine-tuning's settings can be checked for without loading the model: the Trainer settings, every
    input it names, the examples it would train on (the data file's lines, or the draw from the world), an adapter
    only with LoRA, early stopping's needs and the figure `metric_for_best_model` names.

    Raises:
        FileNotFoundError: for an input that is not there, or a world_dir that is not a world.
        ValueError: naming the setting, its value and what is allowed.
    """
    check_trainer_settings(sft_config, "SFTConfig")
    names = ("model_dir", "tokenizer_dir", "adapter_dir", "data_file", *(() if args.data_file else ("world_dir",)))
    for name in names:
        path = getattr(args, name)
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"FinetuneArguments.{name} is {path!r}; allowed: an existing path")
    world = None if args.data_file else args.world_dir
    if world is not None and not (Path(world) / KNOWLEDGE_BASE_FILE).is_file():
        raise FileNotFoundError(f"FinetuneArguments.world_dir {world} is not a world (no {KNOWLEDGE_BASE_FILE})")
    load_sft_dataset(args)
    if args.adapter_dir is not None and not args.use_lora:
        raise ValueError("FinetuneArguments.adapter_dir is set but use_lora is not; allowed: set use_lora true too")
    check_early_stopping(args, sft_config)
    check_metric_name(sft_config.metric_for_best_model, [] if args.data_file else args.factuality_sets)


def check_metric_name(metric: str | None, factuality_sets: list[str]) -> None:
    """Refuse a `metric_for_best_model` no evaluation logs (the Trainer would fail at the first evaluation).

    Raises:
        ValueError: naming the metric and the figures there will be.
    """
    if metric is None:
        return
    figures = ["loss"] + [
        f"{name}_{category}{figure}"
        for name in factuality_sets
        for category in ("", *(f"{c}_" for c in KNOWLEDGE_CATEGORIES))
        for figure in FIGURES
    ]
    if metric.removeprefix("eval_") not in figures:
        raise ValueError(
            f"SFTConfig.metric_for_best_model is {metric!r}, which no evaluation logs; allowed: eval_loss or "
            f"eval_<set>_<figure> with a set of {factuality_sets} and a figure of {list(FIGURES)}"
        )


def check_early_stopping(args: FinetuneArguments, sft_config: SFTConfig) -> None:
    """Refuse `early_stopping_patience` without what `EarlyStoppingCallback` needs, before any training (the
    callback itself would only assert it once training starts).

    Raises:
        ValueError: naming the missing setting, or a patience below 1.
    """
    if args.early_stopping_patience is None:
        return
    if args.early_stopping_patience < 1:
        raise ValueError(f"early_stopping_patience must be at least 1, got {args.early_stopping_patience}")
    if sft_config.eval_strategy == IntervalStrategy.NO or sft_config.metric_for_best_model is None:
        raise ValueError(
            "early_stopping_patience needs evaluations and a figure to judge them by: set eval_strategy (epoch or "
            "steps) and metric_for_best_model (and load_best_model_at_end, to keep the best model)"
        )


def check_not_truncated(tokenized: datasets.Dataset, eos_token_id: int, max_length: int | None) -> None:
    """Refuse a fine-tune set that `SFTTrainer` truncated (silently) to `max_length`: a cut example loses the end of
    its completion and the eos token, so the model would learn to stop nowhere.

    Raises:
        ValueError: naming how many examples were cut.
    """
    if max_length is None:
        return
    cut = sum(len(ids) >= max_length and ids[-1] != eos_token_id for ids in tokenized["input_ids"])
    if cut:
        raise ValueError(
            f"{cut} of {len(tokenized)} fine-tuning examples are longer than max_length={max_length} tokens and would "
            "lose the end of their completion and its eos token: raise max_length"
        )


def save_finetuned(
    trainer: FactualitySFTTrainer,
    args: FinetuneArguments,
    out_dir: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save the trained model as `out_dir/model` (full fine-tuning) or `out_dir/adapter` (LoRA), with the tokenizer,
    atomically; returns that folder. `state_dict` is the one to save when it was gathered from several processes."""
    target = out_dir / ("adapter" if args.use_lora else "model")
    if args.use_lora and trainer.base_model_record is None:
        raise ValueError("A LoRA trainer needs the base_model_record of its base model (build_trainer gives it one)")
    base = {BASE_MODEL_FILE: trainer.base_model_record} if args.use_lora else None
    save_atomically(target, trainer.model, trainer.processing_class, state_dict, extra_json=base)
    return target


def kept_model_evaluation(trainer: FactualitySFTTrainer) -> dict:
    """The evaluation of the model the trainer holds after `train()`, with `model_step`, the optimizer step it was
    taken at: the best checkpoint's logged evaluation when `load_best_model_at_end` loaded one; else the last logged
    one if it was taken at the last step, and otherwise a new evaluation of the last model (every process must call
    this, as for `trainer.evaluate`); `{}` when the run evaluates nothing (`eval_strategy` "no").

    Raises:
        RuntimeError: if `load_best_model_at_end` is on but no best checkpoint was recorded: the model in hand is then
            the last one, not the best, and no figure would say so.
    """
    state, args = trainer.state, trainer.args
    evaluations = [entry for entry in state.log_history if "eval_loss" in entry]
    if args.load_best_model_at_end and evaluations:
        if state.best_model_checkpoint is None:
            raise RuntimeError(
                f"load_best_model_at_end is on, but no evaluation of {args.metric_for_best_model} was ever best "
                f"(best_metric {state.best_metric}): the run kept its last model instead"
            )
        kept = next(entry for entry in evaluations if entry["step"] == state.best_global_step)
    elif args.eval_strategy == IntervalStrategy.NO:
        return {}
    elif evaluations and evaluations[-1]["step"] == state.global_step:
        kept = evaluations[-1]
    else:  # the run ended between two evaluations
        kept = {**trainer.evaluate(), "epoch": state.epoch, "step": state.global_step}
    return {**kept, "model_step": kept["step"]}


def finetune(args: FinetuneArguments, sft_config: SFTConfig, exit_when_launched: bool = False) -> Path:
    """Run one fine-tuning and return its output folder, which holds `model/` (full) or `adapter/` (LoRA, with the
    tokenizer), `metrics.json`, `log_history.json` and `run_config.yaml` (with `exit_when_launched`, each of several
    processes exits once the run is written instead: `end_run`, which says why the commands do).

    Raises:
        FileExistsError: if the output folder holds a finished run (see `prepare_output_dir`).
        ValueError: see `build_trainer`; every check runs before training.
    """
    out_dir = prepare_output_dir(
        sft_config.output_dir, args.overwrite_output_dir, sft_config.process_index == 0, run_inputs(args)
    )
    args.num_threads = set_num_threads(args.num_threads, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    trainer = build_trainer(args, sft_config)
    train_dataset = trainer.train_dataset
    # A PeftModel passes num_parameters on to the model it wraps, whose modules now hold the adapters too.
    trainable, total = trainer.model.num_parameters(only_trainable=True), trainer.model.num_parameters()
    if trainer.is_world_process_zero():
        print(
            f"finetune: {len(train_dataset)} examples; {trainable:,} of {total:,} parameters trainable "
            f"({trainable / total:.2%}); {trainer.accelerator.num_processes} process(es), "
            f"{args.num_threads} thread(s) each"
        )
    result = trainer.train(resume_from_checkpoint=sft_config.resume_from_checkpoint)
    # On every process, before anything is written: a run without the figures of its model stops here whole.
    kept = kept_model_evaluation(trainer)

    # Every process takes part: under FSDP this gathers the full weights from their shards.
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        target = save_finetuned(trainer, args, out_dir, state_dict)
        metrics = {
            **result.metrics,
            **kept,  # the saved model's figures (its epoch too), factuality included
            "num_examples": len(train_dataset),
            "num_processes": trainer.accelerator.num_processes,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "trainable_share": trainable / total,
        }
        write_run_record(out_dir, metrics, trainer.state.log_history, args, sft_config)
        print(f"finetune: wrote {target}, metrics.json, log_history.json and run_config.yaml in {out_dir}")
    end_run(trainer, exit_when_launched)
    return out_dir


__all__ = [
    "DEFAULTS",
    "FinetuneArguments",
    "build_trainer",
    "check_finetuning",
    "check_metric_name",
    "run_inputs",
    "with_replay",
    "check_early_stopping",
    "check_lora_settings",
    "check_lora_targets",
    "finetune",
    "kept_model_evaluation",
    "load_sft_dataset",
    "loss_rows",
    "lora_config",
    "lora_targets",
    "save_finetuned",
    "world_evaluation_sets",
]
