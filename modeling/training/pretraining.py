"""Pre-training the LSTM language model (or a transformers architecture built from scratch, e.g. gpt2) with the
Hugging Face Trainer, on a world's biographies or any corpus.

One run: make (or load) the world, or load the user's corpus; hold out a slice of the documents; train the tokenizer
on the rest (unless one is given); train with `Trainer` (so `accelerate launch` runs it on several processes, GPUs or
machines) on one sequence per document (see `modeling.training.corpus`); save model and tokenizer, plot the loss
curve, report the held-out perplexity and, for a world, let the model write every known person's biography and score
its claims.
"""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForLanguageModeling,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from ..checkpoints import save_atomically
from ..files import write_json
from ..lstm.configuration_lstm import LSTMConfig
from ..lstm.modeling_lstm import LSTMForCausalLM, check_tokenizer_fits
from ..lstm.tokenization_lstm import MIN_VOCAB_SIZE, train_tokenizer
from ..run_config import RunArguments
from ..run_folder import prepare_output_dir, write_run_record
from ..scoring import score_biographies
from ..threads import set_num_threads
from ..world import (
    KNOWLEDGE_BASE_FILE,
    PRETRAIN_SPLIT,
    World,
    WorldConfig,
    generate_world,
    load_world,
    load_world_datasets,
    save_world,
    to_dataset_dict,
)
from .architectures import build_config, check_fits_positions, is_lstm
from .console import loss_summary, use_console_progress
from .corpus import build_examples, load_corpus
from .defaults import COMMON_DEFAULTS, check_trainer_settings
from .plots import plot_loss_curves
from .precision import float32_forward
from .process_exit import end_run


@dataclass
class PretrainArguments(RunArguments):
    """What to pre-train on and which model to build. Trainer settings live in `TrainingArguments`."""

    train_files: list[str] | None = field(
        default=None,
        metadata={
            "help": "your corpus instead of a world: .txt files (one document per blank-line block, or per file), "
            "JSON Lines with a text field, folders written by save_to_disk, or folders of .txt files"
        },
    )
    text_field: str = field(default="text", metadata={"help": "field or column of train_files that holds the text"})
    txt_document: str = field(default="block", metadata={"help": "a .txt document is a blank-line 'block' or a 'file'"})
    world_dir: str | None = field(
        default=None, metadata={"help": "saved world to use; default: make one in <output_dir>/world"}
    )
    num_people: int = field(default=300, metadata={"help": "people in a newly made world (known and unknown)"})
    world_seed: int = field(default=0, metadata={"help": "seed of a newly made world"})
    heldout_fraction: float = field(
        default=0.2, metadata={"help": "share of each group of a newly made world kept out of fine-tuning"}
    )
    pretraining_qa_fraction: float = field(
        default=0.0,
        metadata={
            "help": "share of the known people of a newly made world whose answered questions are pre-trained on"
        },
    )
    model_dir: str | None = field(
        default=None, metadata={"help": "saved model to continue pre-training (its tokenizer unless tokenizer_dir)"}
    )
    tokenizer_dir: str | None = field(
        default=None, metadata={"help": "saved tokenizer to use; default: the model's, or one trained on the corpus"}
    )
    vocab_size: int = field(default=1024, metadata={"help": "tokenizer vocabulary, bytes and special tokens included"})
    model_type: str = field(
        default="lstm", metadata={"help": "lstm, or a transformers model type built from scratch, e.g. gpt2"}
    )
    embedding_dim: int = field(
        default=128, metadata={"help": "width of the LSTM's token embeddings (a transformer's are hidden_size wide)"}
    )
    hidden_size: int = field(
        default=256, metadata={"help": "width of the LSTM state, or of a transformer's hidden states (gpt2: n_embd)"}
    )
    num_layers: int = field(default=3, metadata={"help": "LSTM layers, or transformer blocks (gpt2: n_layer)"})
    num_attention_heads: int = field(
        default=4,
        metadata={"help": "a transformer's attention heads (gpt2: n_head); must divide hidden_size; LSTM: ignored"},
    )
    max_position_embeddings: int = field(
        default=512,
        metadata={
            "help": "the longest sequence a transformer can read (gpt2: n_positions): pre-training blocks, fine-tune "
            "prompt+completion and prompt+generated tokens must fit; the LSTM has no limit and ignores it"
        },
    )
    dropout: float = field(
        default=0.0, metadata={"help": "dropout of the LSTM, or every dropout probability of a transformer's config"}
    )
    max_length: int = field(default=256, metadata={"help": "longest training sequence; longer documents are cut"})
    packing: bool = field(
        default=False, metadata={"help": "join the documents into one stream cut into blocks of max_length tokens"}
    )
    eval_fraction: float = field(default=0.05, metadata={"help": "share of documents held out for the eval loss"})
    num_samples: int = field(default=4, metadata={"help": "sampled biographies printed at the end"})
    biography_max_new_tokens: int = field(default=96, metadata={"help": "length of each written biography"})


def run_inputs(args: PretrainArguments) -> tuple[str | None, ...]:
    """What a pre-training reads (a world, a model, a tokenizer, a corpus): no overwrite may delete it."""
    return (args.world_dir, args.model_dir, args.tokenizer_dir, *(args.train_files or []))


def world_config(args: PretrainArguments) -> WorldConfig:
    """The config of the world a pre-training without `world_dir` makes (checked by `WorldConfig` itself)."""
    return WorldConfig(
        num_people=args.num_people,
        seed=args.world_seed,
        heldout_fraction=args.heldout_fraction,
        pretraining_qa_fraction=args.pretraining_qa_fraction,
    )


# The main job's embedded default: a few CPU minutes on the default world and model sizes.
DEFAULTS = dict(
    COMMON_DEFAULTS,
    output_dir="runs/pretrain",
    num_train_epochs=15,
    per_device_train_batch_size=16,
    learning_rate=3e-3,
    lr_scheduler_type="cosine",
    warmup_steps=0.05,
    weight_decay=0.01,
    max_grad_norm=1.0,
    eval_strategy="epoch",
)


def load_documents(args: PretrainArguments, training_args: TrainingArguments) -> tuple[World | None, datasets.Dataset]:
    """The world (None for a corpus of the user's) and its documents: `args.train_files`, or the biographies of
    `args.world_dir`, or of a world made in `<output_dir>/world` by the main process (call it main process first).

    Raises:
        ValueError: if both `train_files` and `world_dir` are given; see `load_corpus` for a bad corpus.
    """
    if args.train_files:
        if args.world_dir is not None:
            raise ValueError("Give train_files (your corpus) or world_dir (a world's biographies), not both")
        return None, load_corpus(args.train_files, args.text_field, args.txt_document)
    if args.world_dir is None:
        world_dir = Path(training_args.output_dir) / "world"
        if training_args.process_index == 0:
            save_world(generate_world(world_config(args)), world_dir)
    else:
        world_dir = Path(args.world_dir)
    return load_world(world_dir), load_world_datasets(world_dir)[PRETRAIN_SPLIT].select_columns(["text"])


def split_documents(documents: datasets.Dataset, eval_fraction: float, seed: int) -> datasets.DatasetDict:
    """Hold out `eval_fraction` of the documents (at least one) as "test"; the rest is "train".

    Raises:
        ValueError: if `eval_fraction` is not strictly between 0 and 1, or leaves no training document.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be between 0 and 1 (exclusive), got {eval_fraction}")
    held_out = math.ceil(eval_fraction * len(documents))  # how datasets rounds test_size
    if held_out >= len(documents):
        raise ValueError(
            f"eval_fraction {eval_fraction} of {len(documents)} document(s) holds out {held_out} and leaves none to "
            "train on: give more documents (a .txt file splits into documents at blank lines)"
        )
    return documents.train_test_split(test_size=eval_fraction, seed=seed)


def load_tokenizer(args: PretrainArguments, train_documents: datasets.Dataset) -> PreTrainedTokenizerBase:
    """The tokenizer of `args.tokenizer_dir`, else of `args.model_dir`, else one trained on `train_documents`.

    Raises:
        ValueError: if a given tokenizer has no eos or pad token (the model needs both).
    """
    folder = args.tokenizer_dir or args.model_dir
    if folder is None:
        return train_tokenizer(train_documents["text"], args.vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    missing = [name for name in ("eos_token", "pad_token") if getattr(tokenizer, name) is None]
    if missing:
        raise ValueError(f"The tokenizer in {folder} has no {' or '.join(missing)}; the model needs both")
    return tokenizer


def new_model_config(args: PretrainArguments, vocab_size: int, **token_ids: int | None) -> PreTrainedConfig:
    """The config of a new model of `args.model_type` sized by `args`: an `LSTMConfig`, or a transformers
    architecture's (`build_config`).

    Raises:
        ValueError: for a `model_type` or sizes that cannot be built (the configs check them).
    """
    if is_lstm(args.model_type):
        return LSTMConfig(
            vocab_size=vocab_size,
            embedding_dim=args.embedding_dim,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            dropout=args.dropout,
            **token_ids,
        )
    return build_config(
        args.model_type,
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_attention_heads=args.num_attention_heads,
        max_position_embeddings=args.max_position_embeddings,
        dropout=args.dropout,
        **token_ids,
    )


def check_pretraining(args: PretrainArguments, training_args: TrainingArguments) -> None:
    """What a pre-training's settings can be checked for before it writes or trains anything: the Trainer settings,
    the corpus or world it reads (or the world it would make: no split empty), the tokenizer's size and the config
    of the model it would build.

    Raises:
        FileNotFoundError: for a corpus file, world, model or tokenizer that is not there.
        ValueError: naming the setting, its value and what is allowed.
    """
    check_trainer_settings(training_args, "TrainingArguments")
    if args.train_files is not None and args.world_dir is not None:
        raise ValueError("Give train_files (your corpus) or world_dir (a world's biographies), not both")
    for path in [*(args.train_files or []), args.model_dir, args.tokenizer_dir]:
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"PretrainArguments names {path!r}, which is not there; allowed: an existing path")
    if args.world_dir is not None and not (Path(args.world_dir) / KNOWLEDGE_BASE_FILE).is_file():
        raise FileNotFoundError(
            f"PretrainArguments.world_dir {args.world_dir} is not a world (no {KNOWLEDGE_BASE_FILE}); allowed: a "
            "folder lstm-lab-make-world wrote"
        )
    if args.world_dir is None and args.train_files is None:
        to_dataset_dict(generate_world(world_config(args)))  # the world it would make: refused if a split is empty
    if args.model_dir is None:
        if args.tokenizer_dir is None and args.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"PretrainArguments.vocab_size is {args.vocab_size}; allowed: at least {MIN_VOCAB_SIZE}")
        new_model_config(args, max(args.vocab_size, MIN_VOCAB_SIZE), pad_token_id=0, eos_token_id=1)


def build_model(args: PretrainArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The model of `args.model_dir` to continue, or a new one of `args.model_type` sized by `args` for `tokenizer`:
    our LSTM, or a transformers architecture built from scratch by `AutoModelForCausalLM.from_config`.

    Raises:
        ValueError: if the tokenizer (of `args.tokenizer_dir`, else the model's own) does not fit the model of
            `args.model_dir`; for a `model_type` or sizes transformers cannot build (see `build_config`); if
            `args.max_length` is longer than the model can read.
    """
    special_ids = dict(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    if args.model_dir is not None:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir)
        # Our LSTM checks the tokenizer saved with it as it loads; a transformers model loads without a look.
        check_tokenizer_fits(model.config, args.tokenizer_dir or args.model_dir)
    elif is_lstm(args.model_type):
        model = LSTMForCausalLM(new_model_config(args, len(tokenizer), **special_ids))
    else:
        model = AutoModelForCausalLM.from_config(new_model_config(args, len(tokenizer), **special_ids))
    check_fits_positions(model.config, args.max_length, "max_length (the longest training sequence)")
    return model


def prepare_corpus(
    args: PretrainArguments, training_args: TrainingArguments
) -> tuple[World | None, datasets.DatasetDict, PreTrainedTokenizerBase, dict[str, datasets.Dataset]]:
    """The world (None on a corpus of files), the documents split into "train" and "test", the tokenizer and the
    tokenized examples of each split. The main process makes the world and fills the datasets caches; the others
    then read them (local=False: on several machines the one global main process makes the world, on a shared
    filesystem)."""
    with training_args.main_process_first(local=False, desc="corpus and tokenizer"):
        world, documents = load_documents(args, training_args)
        documents = split_documents(documents, args.eval_fraction, training_args.seed)
        tokenizer = load_tokenizer(args, documents["train"])
        examples = {
            split: build_examples(docs, tokenizer, args.max_length, args.packing) for split, docs in documents.items()
        }
    return world, documents, tokenizer, examples


def save_pretraining_run(
    args: PretrainArguments, trainer: Trainer, metrics: dict, world: World | None, out_dir: Path
) -> Path:
    """On every process: gather the weights (under FSDP from their shards); on the main process: save the model,
    and the run's record (metrics, log history, config, loss plot, and on world data the biographies it writes).
    Returns the model folder."""
    model_dir = out_dir / "model"
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        save_atomically(model_dir, trainer.model, trainer.processing_class, state_dict)
        metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
        metrics["num_processes"] = trainer.accelerator.num_processes
        print(f"pretrain: eval loss {metrics['eval_loss']:.3f} (perplexity {metrics['eval_perplexity']:.2f})")
        if world is not None:
            metrics.update(write_biographies(args, trainer, trainer.processing_class, world, out_dir))
        plot_loss_curves(trainer.state.log_history, out_dir / "loss.png")
        write_run_record(out_dir, metrics, trainer.state.log_history, args, trainer.args)
        print(f"pretrain: wrote {model_dir}; loss.png, metrics.json, log_history.json, run_config.yaml in {out_dir}")
    return model_dir


def pretrain(args: PretrainArguments, training_args: TrainingArguments, exit_when_launched: bool = False) -> Path:
    """Run one pre-training; returns the folder of the saved model and tokenizer (with `exit_when_launched`, each of
    several processes exits once the run is written instead: `end_run`, which says why the commands do).

    Raises:
        FileExistsError: if the output folder holds a finished run (see `prepare_output_dir`).
        ValueError: for a bad corpus, tokenizer or model (see the functions above), before any training.
    """
    is_main = training_args.process_index == 0
    out_dir = prepare_output_dir(training_args.output_dir, args.overwrite_output_dir, is_main, run_inputs(args))
    args.num_threads = set_num_threads(args.num_threads, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    world, documents, tokenizer, examples = prepare_corpus(args, training_args)
    torch.manual_seed(training_args.seed)
    model = build_model(args, tokenizer)
    if world is not None:
        names = tokenizer([person.name for person in world.people_in("known")])["input_ids"]
        biography = max(map(len, names)) + args.biography_max_new_tokens
        check_fits_positions(model.config, biography, "a biography (the longest name and biography_max_new_tokens)")
    sequences_per_step = (
        training_args.per_device_train_batch_size * training_args.world_size * training_args.gradient_accumulation_steps
    )
    print(
        f"pretrain: {len(documents['train'])} train / {len(documents['test'])} eval documents -> "
        f"{len(examples['train'])} / {len(examples['test'])} sequences; {model.num_parameters():,} parameters; "
        f"{sequences_per_step} sequences per step; {args.num_threads} thread(s) per process"
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=examples["train"],
        eval_dataset=examples["test"],
        # Pads on the right and sets the labels of pads to -100; the model keeps pads out of the LSTM state.
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
        processing_class=tokenizer,
    )
    use_console_progress(trainer, loss_summary("pretrain"))
    trainer.train()
    model_dir = save_pretraining_run(args, trainer, trainer.evaluate(), world, out_dir)
    end_run(trainer, exit_when_launched)
    return model_dir


def write_biographies(
    args: PretrainArguments, trainer: Trainer, tokenizer: PreTrainedTokenizerBase, world: World, out_dir: Path
) -> dict[str, float]:
    """What the model learned: each known person's biography as it writes it, claim by claim against the record,
    written to `biographies.json`; returns the figures as `biography_*` metrics."""
    with float32_forward(trainer.model) as model:  # as the saved model writes them
        biographies = score_biographies(
            model,
            tokenizer,
            world.people_in("known"),
            args.biography_max_new_tokens,
            trainer.args.per_device_eval_batch_size,
        )
    write_json(biographies, out_dir / "biographies.json")
    for category, scores in biographies["by_knowledge"].items():
        print(
            f"pretrain: {category} people: claim precision {scores['claim_precision']:.2f}, "
            f"coverage {scores['coverage']:.2f}"
        )
    print("pretrain: samples\n" + "\n".join(f"  {b['text']}" for b in biographies["biographies"][: args.num_samples]))
    return {f"biography_{name}": value for name, value in biographies["metrics"].items()}


__all__ = [
    "DEFAULTS",
    "PretrainArguments",
    "build_model",
    "check_pretraining",
    "new_model_config",
    "run_inputs",
    "world_config",
    "load_documents",
    "load_tokenizer",
    "pretrain",
    "split_documents",
]
