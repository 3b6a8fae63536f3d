"""Run the study (the main job; see README).

python scripts/study.py                                   # configs/study/default.yaml
python scripts/study.py configs/study/tiny.yaml           # another study config
python scripts/study.py configs/study/tiny.yaml --thin_sizes 6 12   # flags override the file
"""

import sys

from modeling.run_config import parse_run_config
from modeling.study import StudyArguments, run_study

DEFAULT_CONFIG = "configs/study/default.yaml"


def main() -> None:
    argv = sys.argv[1:]
    if not argv or not argv[0].endswith((".yaml", ".yml")):
        argv = [DEFAULT_CONFIG, *argv]
    (args,) = parse_run_config((StudyArguments,), argv)
    run_study(args)


if __name__ == "__main__":
    main()
