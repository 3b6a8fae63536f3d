"""Loading a saved model (optionally with a PEFT adapter) and saving one without ever leaving a half-written folder."""

import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .tokenization_lstm import LSTMTokenizer


def load_model_and_tokenizer(
    model_dir: str | os.PathLike,
    adapter_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, LSTMTokenizer]:
    """Load a model folder written by `save_pretrained` (and a LoRA adapter on top), in eval mode, with its
    tokenizer set up for batched generation (left padding)."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a saved model: it has no config.json")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if adapter_dir is not None:
        if not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter_dir} is not a saved PEFT adapter: it has no adapter_config.json")
        model = PeftModel.from_pretrained(model, adapter_dir)
    # Generation appends on the right, so prompts of a batch must end in the same column.
    tokenizer.padding_side = "left"
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def save_atomically(
    out_dir: str | os.PathLike, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None
) -> Path:
    """Save `model` (and `tokenizer`) to `out_dir` through a temporary sibling folder that replaces `out_dir` only
    once everything is written, so a failed save never leaves a half-written checkpoint and keeps the previous one.
    (A crash in the instant between the two renames leaves the previous checkpoint in `.NAME.old`.)"""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    # mkdtemp makes the folder private (0700); a checkpoint gets the permissions of any folder made here.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if out_dir.exists():
            retired = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(retired, ignore_errors=True)
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


__all__ = ["load_model_and_tokenizer", "save_atomically"]
