"""Pre-training the LSTM language model on the known people's biographies with the Hugging Face Trainer.

One run: make (or load) the world, train the tokenizer on the pre-training corpus, train with `Trainer` (so
`accelerate launch` runs it on several processes or GPUs) on one sequence per biography, save model and tokenizer,
plot the loss curve, then let the model write every known person's biography and score its claims.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

from .checkpoints import save_atomically
from .configuration_lstm import LSTMConfig
from .modeling_lstm import LSTMForCausalLM
from .plots import plot_loss_curves
from .run_config import save_run_config
from .scoring import score_biographies, write_json
from .tokenization_lstm import LSTMTokenizer, train_tokenizer
from .world import PRETRAIN_SPLIT, WorldConfig, generate_world, load_world, load_world_datasets, save_world


@dataclass
class PretrainArguments:
    """What to pre-train on and which model to build. Trainer settings live in `TrainingArguments`."""

    world_dir: str | None = field(
        default=None, metadata={"help": "saved world to use; default: make one in <output_dir>/world"}
    )
    num_people: int = field(default=300, metadata={"help": "people in a newly made world (known and unknown)"})
    world_seed: int = field(default=0, metadata={"help": "seed of a newly made world"})
    vocab_size: int = field(default=1024, metadata={"help": "tokenizer vocabulary, bytes and special tokens included"})
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 3
    dropout: float = 0.0
    max_length: int = field(default=256, metadata={"help": "longest training sequence; longer documents are cut"})
    eval_fraction: float = field(default=0.05, metadata={"help": "share of documents held out for the eval loss"})
    num_samples: int = field(default=4, metadata={"help": "sampled biographies printed at the end"})
    biography_max_new_tokens: int = field(default=96, metadata={"help": "length of each written biography"})


# The main job's embedded default: a few CPU minutes on the default world and model sizes.
DEFAULTS = dict(
    output_dir="runs/pretrain",
    num_train_epochs=15,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    learning_rate=3e-3,
    lr_scheduler_type="cosine",
    warmup_steps=0.05,
    weight_decay=0.01,
    max_grad_norm=1.0,
    logging_steps=10,
    eval_strategy="epoch",
    save_strategy="no",
    report_to="none",
    seed=0,
    # Without an accelerator, accelerate forms a multi-process (gloo) group only when told the run is on the CPU.
    use_cpu=not torch.accelerator.is_available(),
)


def build_examples(texts: list[str], tokenizer: LSTMTokenizer, max_length: int) -> datasets.Dataset:
    """One training sequence per document, ended by the eos token (truncated to `max_length` tokens).

    Every document starts from the zero state, just as a prompt does at generation time: with documents packed
    back to back, the model would learn to start a biography only after an eos token, and a bare name as a prompt
    would be a state it never trained on.
    """
    if not texts:
        raise ValueError("The pre-training corpus is empty")
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return datasets.Dataset.from_dict({"input_ids": [(ids + [tokenizer.eos_token_id])[:max_length] for ids in encoded]})


def pretrain(args: PretrainArguments, training_args: TrainingArguments) -> Path:
    """Run one pre-training; returns the folder of the saved model and tokenizer."""
    out_dir = Path(training_args.output_dir)
    with training_args.main_process_first(desc="world and tokenizer"):
        if args.world_dir is None:
            world_dir = out_dir / "world"
            if training_args.process_index == 0:
                save_world(generate_world(WorldConfig(num_people=args.num_people, seed=args.world_seed)), world_dir)
        else:
            world_dir = Path(args.world_dir)
        world = load_world(world_dir)
        texts = list(load_world_datasets(world_dir)[PRETRAIN_SPLIT]["text"])
        tokenizer = train_tokenizer(texts, args.vocab_size)
        examples = build_examples(texts, tokenizer, args.max_length).train_test_split(
            test_size=args.eval_fraction, seed=training_args.seed
        )

    config = LSTMConfig(
        vocab_size=len(tokenizer),
        embedding_dim=args.embedding_dim,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        dropout=args.dropout,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(training_args.seed)
    model = LSTMForCausalLM(config)
    sequences_per_step = (
        training_args.per_device_train_batch_size * training_args.world_size * training_args.gradient_accumulation_steps
    )
    print(
        f"pretrain: {len(texts)} biographies -> {len(examples['train'])} train / {len(examples['test'])} eval; "
        f"{model.num_parameters():,} parameters; {sequences_per_step} sequences per step"
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
    trainer.train()
    metrics = trainer.evaluate()

    model_dir = out_dir / "model"
    if trainer.is_world_process_zero():
        save_atomically(model_dir, trainer.model, tokenizer)
        save_run_config(out_dir, args, training_args)
        metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
        # What the model learned: each known person's biography as it writes it, claim by claim against the record.
        biographies = score_biographies(
            trainer.model,
            tokenizer,
            world.people_in("known"),
            args.biography_max_new_tokens,
            training_args.per_device_eval_batch_size,
        )
        write_json(biographies, out_dir / "biographies.json")
        metrics.update({f"biography_{name}": value for name, value in biographies["metrics"].items()})
        write_json(metrics, out_dir / "metrics.json")
        plot_loss_curves(trainer.state.log_history, out_dir / "loss.png")
        print(f"pretrain: eval loss {metrics['eval_loss']:.3f} (perplexity {metrics['eval_perplexity']:.2f})")
        for category, scores in biographies["by_knowledge"].items():
            print(
                f"pretrain: {category} people: claim precision {scores['claim_precision']:.2f}, "
                f"coverage {scores['coverage']:.2f}"
            )
        print(
            "pretrain: samples\n" + "\n".join(f"  {b['text']}" for b in biographies["biographies"][: args.num_samples])
        )
        print(
            f"pretrain: wrote {model_dir}, and loss.png, metrics.json, biographies.json, run_config.yaml in {out_dir}"
        )
    # Every process waits for the writer, then leaves the process group: a process that exits with the group still
    # up can abort in gloo's teardown ("terminate called without an active exception", seen in CI-like runs).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return model_dir


__all__ = ["DEFAULTS", "PretrainArguments", "build_examples", "pretrain"]
