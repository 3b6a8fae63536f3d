"""A KL penalty toward the pre-trained model during fine-tuning: the SFT loss plus `kl_coef` times KL(p_ref || p_theta)
between the frozen pre-trained model's next-token distribution (p_ref) and the fine-tuned one's (p_theta), summed
over the chosen positions and divided as the SFT loss is (below).

Which direction and where, and why:

- KL(p_ref || p_theta) is the distillation loss of "Learning without Forgetting" (Li & Hoiem, 2017): it charges the
  fine-tuned model for taking probability away from what the pre-trained model said, which is how a known fact is
  forgotten, while leaving it free to put mass where the pre-trained model put little (the new answers).
- On the completion positions by default (`kl_positions="completion"`): the answer tokens are where fine-tuning moves
  the distribution and where what the model knows is said; the cross-entropy pushes the target token up and the KL
  holds the rest of the distribution where it was. "prompt" holds the question positions instead, "all" both.

The penalty is summed over the chosen positions and divided by what the SFT loss is divided by, the completion
tokens of the whole batch (every process's, every accumulation step's), so `kl_coef` weighs it per trained token, and
two processes train the model one process trains on the same global batch.

The reference is the model before fine-tuning: for LoRA, the same model with its adapters disabled (no copy); for
full fine-tuning, a frozen copy of the weights taken when the trainer is built. Both are run under `no_grad`, outside
DDP's wrapper, so `accelerate launch` trains as without the penalty.
"""

from contextlib import AbstractContextManager, nullcontext

import torch
from peft import PeftModel
from torch import nn

KL_POSITIONS = ("completion", "prompt", "all")


def position_mask(labels: torch.Tensor, attention_mask: torch.Tensor, positions: str) -> torch.Tensor:
    """Which next-token predictions the penalty covers, as a (B, T-1) bool mask over `logits[:, :-1]`: the one at
    position t predicts token t+1, a completion token where `labels[:, t+1] != -100`.

    Raises:
        ValueError: for `positions` not in `KL_POSITIONS`.
    """
    if positions not in KL_POSITIONS:
        raise ValueError(f"kl_positions is {positions!r}; allowed: one of {list(KL_POSITIONS)}")
    real = attention_mask[:, 1:].bool()
    completion = labels[:, 1:] != -100
    return {"completion": completion, "prompt": real & ~completion, "all": real}[positions]


def kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p_theta) in nats at each `mask`ed position, (N,), from the (B, T, V) logits of the model and of
    the reference (a float32 softmax over `logits[:, :-1]`)."""
    log_p = torch.log_softmax(logits[:, :-1].float(), dim=-1)[mask]  # (N, V)
    log_ref = torch.log_softmax(reference_logits[:, :-1].float(), dim=-1)[mask]
    return (log_ref.exp() * (log_ref - log_p)).sum(dim=-1)


def _fresh_copy(model: nn.Module) -> nn.Module:
    copy = type(model)(model.config).to(dtype=model.dtype, device=model.device)
    copy.load_state_dict(model.state_dict())
    return copy


class Reference:
    """The pre-trained model the penalty holds the fine-tuned one to: its logits under `no_grad`."""

    def __init__(self, model: nn.Module):
        self.adapters = isinstance(model, PeftModel)
        # Full fine-tuning changes the weights in place: keep a frozen copy of them as they are now, in a model
        # built afresh. (A deepcopy would also copy what the trainer patched onto the instance, e.g. a wrapped
        # `forward` closing over the original model: the copy would then run the weights being trained.)
        self.frozen = None if self.adapters else _fresh_copy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def logits(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The reference's (B, T, V) logits; `model` is the unwrapped model being fine-tuned."""
        if self.adapters:
            context: AbstractContextManager = model.disable_adapter()
            reference = model
        else:
            context, reference = nullcontext(), self.frozen.to(input_ids.device)
        with context:
            training = reference.training
            reference.eval()  # no dropout in the reference
            logits = reference(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            reference.train(training)
        return logits


__all__ = ["KL_POSITIONS", "Reference", "kl_to_reference", "position_mask"]
