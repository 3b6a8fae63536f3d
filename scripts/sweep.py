"""Run the fine-tuning regime sweep (issue 19's first step; see modeling/study/sweep.py and README).

python scripts/sweep.py configs/study/sweep.yaml                          # the committed sweep
python scripts/sweep.py configs/study/sweep.yaml --training_seeds 0       # flags override the file
"""

import sys

from modeling.run_config import parse_run_config
from modeling.study import SweepArguments, run_sweep


def main() -> None:
    (args,) = parse_run_config((SweepArguments,), sys.argv[1:])
    run_sweep(args)


if __name__ == "__main__":
    main()
