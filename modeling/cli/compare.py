"""Compare two studies run over the same world seeds, e.g. the LSTM against gpt2 of the same size: which one loses
more on known people as the unknown share grows, which one hallucinates more on unknown people, whose confidence
detects it better, each difference with a paired interval (see modeling/study/architectures.py).

  lstm-lab-study configs/study/architectures_lstm.yaml && lstm-lab-study configs/study/architectures_gpt2.yaml
  lstm-lab-compare configs/study/architectures.yaml               # then this: comparison.md, .json, .png
"""

from pathlib import Path

from ..run_config import parse_run_config
from ..study.architectures import CompareArguments, compare_studies
from ..study.architectures_report import write_comparison
from . import DEBUG_HELP, run_command

PROG = "lstm-lab-compare"


def parse(argv: list[str]) -> CompareArguments:
    """The comparison's settings from `argv`, with both studies' shared worlds checked."""
    (args,) = parse_run_config((CompareArguments,), argv, description=f"{__doc__}\n{DEBUG_HELP}", prog=PROG)
    args.check_studies()
    return args


def run(args: CompareArguments) -> None:
    path = write_comparison(compare_studies(args), Path(args.output_dir))
    print(f"{PROG}: wrote {path} with comparison.json and comparison.png")


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, run, argv)


if __name__ == "__main__":
    main()
