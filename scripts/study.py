"""Run the study (the main job; see README).

python scripts/study.py                                   # the default study (StudyArguments' defaults)
python scripts/study.py configs/study/tiny.yaml           # another study config
python scripts/study.py configs/study/tiny.yaml --thin_sizes 2 3    # flags override the file
"""

import sys

from modeling.run_config import parse_run_config
from modeling.study import StudyArguments, run_study


def main() -> None:
    (args,) = parse_run_config((StudyArguments,), sys.argv[1:])
    run_study(args)


if __name__ == "__main__":
    main()
