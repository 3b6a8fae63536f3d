"""Fine-tune a pre-trained model (our LSTM or a transformers one) on question/answer pairs (SFT with TRL), in full or
with LoRA.

  lstm-lab-finetune                                 # the embedded default: runs/pretrain's model and world
  lstm-lab-finetune configs/finetune_tiny.yaml      # a config file overrides the defaults
  lstm-lab-finetune configs/finetune_tiny.yaml --use_lora true --lora_r 4    # flags override the file
  lstm-lab-finetune --data_file my_pairs.jsonl      # your own {"prompt": ..., "completion": ...} lines
  accelerate launch --config_file configs/accelerate/cpu_2_processes.yaml scripts/finetune.py configs/finetune_tiny.yaml
"""

from pathlib import Path

from trl import SFTConfig

from ..run_config import parse_run_config
from ..run_folder import check_output_dir
from ..training.finetuning import DEFAULTS, FinetuneArguments, finetune, run_inputs
from . import DEBUG_HELP, run_command

PROG = "lstm-lab-finetune"

# The inputs a run reads, by setting: each must exist when given (world_dir only without data_file, which replaces it).
INPUTS = ("model_dir", "tokenizer_dir", "adapter_dir", "data_file")


def parse(argv: list[str]) -> tuple[FinetuneArguments, SFTConfig]:
    """The fine-tuning settings from `argv`, with every input they name present."""
    args, sft_config = parse_run_config(
        (FinetuneArguments, SFTConfig), argv, DEFAULTS, description=f"{__doc__}\n{DEBUG_HELP}", prog=PROG
    )
    for name in (*INPUTS, "world_dir") if args.data_file is None else INPUTS:
        path = getattr(args, name)
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"FinetuneArguments.{name} is {path!r}; allowed: an existing path")
    check_output_dir(sft_config.output_dir, args.overwrite_output_dir, run_inputs(args))
    return args, sft_config


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, lambda settings: finetune(*settings), argv)


if __name__ == "__main__":
    main()
