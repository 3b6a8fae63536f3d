"""Pre-train the LSTM language model (or a transformers architecture, --model_type) on a world's biographies (the
main job; see README).

python scripts/pretrain.py                                   # the embedded default config
python scripts/pretrain.py configs/tiny.yaml                 # a config file overrides the defaults
python scripts/pretrain.py configs/tiny.yaml --num_train_epochs 2   # flags override the file
python scripts/pretrain.py configs/study/tiny_gpt2.yaml      # a tiny gpt2 built from scratch instead of the LSTM
accelerate launch --config_file configs/accelerate/cpu_2_processes.yaml scripts/pretrain.py configs/tiny.yaml
"""

import sys

from transformers import TrainingArguments

from modeling.run_config import parse_run_config
from modeling.training.pretraining import DEFAULTS, PretrainArguments, pretrain


def main() -> None:
    args, training_args = parse_run_config((PretrainArguments, TrainingArguments), sys.argv[1:], DEFAULTS)
    pretrain(args, training_args)


if __name__ == "__main__":
    main()
