"""Run the study, the main job: pre-train, probe, fine-tune every condition, then write the records, results, plots
and report (see docs/study.md).

  lstm-lab-study                                     # the default study (about 10 minutes on 2 CPU cores)
  lstm-lab-study configs/study/tiny.yaml             # another study config
  lstm-lab-study configs/study/tiny.yaml --thin_sizes 2 3     # flags override the file
  python scripts/study.py configs/study/tiny.yaml    # the same, from a checkout

Every setting is checked before anything runs, the pre-training and fine-tuning configs it names and the world they
make included.
"""

from ..run_config import parse_run_config
from ..study import StudyArguments, run_study
from ..study.preflight import check_study
from . import DEBUG_HELP, run_command

PROG = "lstm-lab-study"


def parse(argv: list[str]) -> StudyArguments:
    """The study's settings from `argv` (a config file, then flags), all checked (`check_study`)."""
    (args,) = parse_run_config((StudyArguments,), argv, description=f"{__doc__}\n{DEBUG_HELP}", prog=PROG)
    check_study(args)
    return args


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, run_study, argv)


if __name__ == "__main__":
    main()
