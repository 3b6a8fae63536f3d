"""Mixed precision: where it pays, and keeping what a run measures in the precision of the model it saves.

Training in bfloat16 autocast keeps the float32 weights as the master copy (the optimizer updates them; only the
matrix products and the LSTM run in bfloat16), so the saved model is float32 like one trained without it. Accelerate
applies the autocast by wrapping the forward of the model it prepares; that wrapper stays on the trainer's model after
training. What the study records of a model (its answers, confidences and hidden states) is computed in float32 inside
`float32_forward`, so that it is what anyone who loads the saved model gets.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def native_bf16() -> bool:
    """Whether this machine runs bfloat16 natively: a CUDA GPU that supports it, or, without an accelerator, a CPU
    with AVX-512 bfloat16 or AMX instructions (elsewhere bfloat16 is emulated and slower than float32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    if torch.accelerator.is_available():
        return False
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


@contextmanager
def float32_forward(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, `model` runs in its weights' own precision, without the autocast wrapper that accelerate's
    mixed precision put around its forward (`Accelerator.prepare_model` keeps the plain forward as
    `_original_forward`); outside, the wrapper is back. A model without the wrapper is left as it is."""
    wrapped, original = model.__dict__.get("forward"), model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield model
        return
    model.forward = original
    try:
        yield model
    finally:
        model.forward = wrapped


__all__ = ["float32_forward", "native_bf16"]
