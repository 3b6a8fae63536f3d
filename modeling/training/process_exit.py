"""How a training run's processes end once its run folder is written."""

import atexit
import os
import sys

from transformers import Trainer


def end_run(trainer: Trainer, exit_when_launched: bool) -> None:
    """Every process waits for the writer (the main process) and leaves the process group. Then, with
    `exit_when_launched` (the commands set it) and several processes (`accelerate launch`), each process runs its exit
    handlers (a `report_to` tracker that finishes at exit, say) and exits with status 0: this call does not return.

    Why exit rather than return: the process group is destroyed when the DistributedDataParallel wrapper's reducer is
    freed, which pybind11 does with the GIL held, and gloo's destructor waits on a mutex that one of its worker threads
    may hold while it needs the GIL to free the tensors of a finished collective (PyTorch issue 56297, open; a stack
    dump of a hung CI-like run shows exactly this). The process then hangs for ever after its work is written, or, at
    interpreter exit, aborts ("terminate called without an active exception"). `os._exit` frees nothing, so it can do
    neither. A library caller that returns runs that risk: the trainer is freed when `pretrain`/`finetune` returns.
    """
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if exit_when_launched and trainer.accelerator.num_processes > 1:
        atexit._run_exitfuncs()  # what a normal exit would run, while the interpreter is whole; frees no object
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
