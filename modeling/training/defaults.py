"""The Trainer settings that pre-training and fine-tuning both start from; each adds its own (see their DEFAULTS)."""

import torch

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

__all__ = ["COMMON_DEFAULTS"]
