"""Pre-train the LSTM language model (or a transformers architecture, --model_type) on a world's biographies.

lstm-lab-pretrain                                    # the embedded default config
lstm-lab-pretrain configs/tiny.yaml                  # a config file overrides the defaults
lstm-lab-pretrain configs/tiny.yaml --num_train_epochs 2    # flags override the file
lstm-lab-pretrain configs/study/tiny_gpt2.yaml       # a tiny gpt2 built from scratch instead of the LSTM
accelerate launch --config_file configs/accelerate/cpu_2_processes.yaml scripts/pretrain.py configs/tiny.yaml
"""

from transformers import TrainingArguments

from ..run_config import parse_run_config
from ..run_folder import check_output_dir
from ..training.pretraining import DEFAULTS, PretrainArguments, check_pretraining, pretrain, run_inputs
from . import DEBUG_HELP, run_command

PROG = "lstm-lab-pretrain"


def parse(argv: list[str]) -> tuple[PretrainArguments, TrainingArguments]:
    """The pre-training settings from `argv`, checked (`check_pretraining`) with the output folder."""
    args, training_args = parse_run_config(
        (PretrainArguments, TrainingArguments), argv, DEFAULTS, description=f"{__doc__}\n{DEBUG_HELP}", prog=PROG
    )
    check_pretraining(args, training_args)
    check_output_dir(training_args.output_dir, args.overwrite_output_dir, run_inputs(args))
    return args, training_args


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, lambda settings: pretrain(*settings, exit_when_launched=True), argv)


if __name__ == "__main__":
    main()
