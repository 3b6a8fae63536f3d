"""Fine-tune a pre-trained model (our LSTM or a transformers one) on question/answer pairs (SFT with TRL), in full or
with LoRA.

python scripts/finetune.py                               # the embedded default: runs/pretrain's model and world
python scripts/finetune.py configs/finetune_tiny.yaml    # a config file overrides the defaults
python scripts/finetune.py configs/finetune_tiny.yaml --use_lora true --lora_r 4   # flags override the file
python scripts/finetune.py --data_file my_pairs.jsonl    # your own {"prompt": ..., "completion": ...} lines
"""

import sys

from trl import SFTConfig

from modeling.run_config import parse_run_config
from modeling.training.finetuning import DEFAULTS, FinetuneArguments, finetune


def main() -> None:
    args, sft_config = parse_run_config((FinetuneArguments, SFTConfig), sys.argv[1:], DEFAULTS)
    finetune(args, sft_config)


if __name__ == "__main__":
    main()
