"""How a training run's processes end once its run folder is written."""

import os
import sys

from transformers import Trainer


def end_run(trainer: Trainer) -> None:
    """Every process waits for the writer (the main process) and leaves the process group; then, when it is one of
    several processes (`accelerate launch`), it exits at once with status 0, so this call does not return there.

    Why exit rather than return: the process group is destroyed when the DistributedDataParallel wrapper's reducer is
    freed, which pybind11 does with the GIL held, and gloo's destructor waits on a mutex that one of its worker threads
    may hold while it needs the GIL to free the tensors of a finished collective (PyTorch issue 56297, open). The
    process then hangs for ever after its work is written (seen in CI, about one run in thirty on a busy CPU), or, at
    interpreter exit, aborts ("terminate called without an active exception"). `os._exit` frees nothing, so it can do
    neither; the output is flushed first, and every file of the run is already closed.
    """
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if trainer.accelerator.num_processes > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
