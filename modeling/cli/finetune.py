"""Fine-tune a pre-trained model (our LSTM or a transformers one) on question/answer pairs (SFT with TRL), in full or
with LoRA.

  lstm-lab-finetune                                 # the embedded default: runs/pretrain's model and world
  lstm-lab-finetune configs/finetune_tiny.yaml      # a config file overrides the defaults
  lstm-lab-finetune configs/finetune_tiny.yaml --use_lora true --lora_r 4    # flags override the file
  lstm-lab-finetune --data_file my_pairs.jsonl      # your own {"prompt": ..., "completion": ...} lines
  accelerate launch --config_file configs/accelerate/cpu_2_processes.yaml scripts/finetune.py configs/finetune_tiny.yaml
"""

from trl import SFTConfig

from ..run_config import parse_run_config
from ..run_folder import check_output_dir
from ..training.finetuning import DEFAULTS, FinetuneArguments, check_finetuning, finetune, run_inputs
from . import DEBUG_HELP, run_command

PROG = "lstm-lab-finetune"


def parse(argv: list[str]) -> tuple[FinetuneArguments, SFTConfig]:
    """The fine-tuning settings from `argv`, checked (`check_finetuning`) with the output folder."""
    args, sft_config = parse_run_config(
        (FinetuneArguments, SFTConfig), argv, DEFAULTS, description=f"{__doc__}\n{DEBUG_HELP}", prog=PROG
    )
    check_finetuning(args, sft_config)
    check_output_dir(sft_config.output_dir, args.overwrite_output_dir, run_inputs(args))
    return args, sft_config


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, lambda settings: finetune(*settings, exit_when_launched=True), argv)


if __name__ == "__main__":
    main()
