"""The Trainer settings that pre-training and fine-tuning both start from (each adds its own: see their DEFAULTS),
and the check of those a run cannot do without."""

import torch
from transformers import TrainingArguments

COMMON_DEFAULTS = dict(
    per_device_eval_batch_size=64,
    logging_steps=10,
    save_strategy="no",
    report_to="none",
    seed=0,
    # Without an accelerator, accelerate forms a multi-process (gloo) group only when told the run is on the CPU.
    use_cpu=not torch.accelerator.is_available(),
    # Every parameter gets a gradient at every step: DDP need not search for unused ones (and warns if asked to).
    ddp_find_unused_parameters=False,
)


def check_trainer_settings(training_args: TrainingArguments, where: str) -> None:
    """Refuse Trainer settings that would fail, or train nothing, only once training starts (AdamW refuses a
    negative rate at its first step; a batch of 0 divides by zero in the study's schedules).

    Raises:
        ValueError: naming `where` (a config file, or the settings' class), the setting, its value and what is
            allowed.
    """
    rules = (
        ("learning_rate", training_args.learning_rate > 0, "a positive rate"),
        ("per_device_train_batch_size", training_args.per_device_train_batch_size >= 1, "a positive batch"),
        ("gradient_accumulation_steps", training_args.gradient_accumulation_steps >= 1, "a positive count"),
        ("num_train_epochs", training_args.num_train_epochs > 0, "a positive number of epochs"),
    )
    for name, holds, allowed in rules:
        if not holds:
            raise ValueError(f"{where}: {name} is {getattr(training_args, name)!r}; allowed: {allowed}")


__all__ = ["COMMON_DEFAULTS", "check_trainer_settings"]
