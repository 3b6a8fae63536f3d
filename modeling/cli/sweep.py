"""Run the fine-tuning regime sweep: method x learning rate x batch size on the plain condition, each for a long fixed
budget, and pick each method's regime on dev people (see docs/study.md and modeling/study/sweep.py).

  lstm-lab-sweep configs/study/sweep.yaml                        # the committed sweep (about 30 minutes)
  lstm-lab-sweep configs/study/sweep.yaml --training_seeds 0     # flags override the file
  python scripts/sweep.py configs/study/sweep.yaml               # the same, from a checkout
"""

from pathlib import Path

from ..run_config import parse_run_config
from ..study import SweepArguments, run_sweep
from ..study.preflight import check_world
from . import DEBUG_HELP, run_command

PROG = "lstm-lab-sweep"


def parse(argv: list[str]) -> SweepArguments:
    """The sweep's settings from `argv`, with the pre-training and world it shares with a study checked (the
    regimes' fine-tuning settings are checked by `run_sweep` before it pre-trains)."""
    (args,) = parse_run_config((SweepArguments,), argv, description=f"{__doc__}\n{DEBUG_HELP}", prog=PROG)
    check_world(args.study(args.finetune_config, Path(args.output_dir)))  # run_sweep checks each regime's
    return args


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, run_sweep, argv)


if __name__ == "__main__":
    main()
