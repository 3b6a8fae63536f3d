"""Publish a study's world on the Hugging Face Hub as a dataset: the QA splits, the pre-training corpus, the study's
dev and test halves, the knowledge base, and a dataset card (generator settings, design, split roles, how to
regenerate and load it). One commit.

  # first look at exactly what would be sent:
  lstm-lab-push-world --world runs/study --repo-id you/lstm-lab-world --dry-run runs/hub/world
  # then send it (needs `hf auth login` or HF_TOKEN):
  lstm-lab-push-world --world runs/study --repo-id you/lstm-lab-world
  # and name it on the model's card:
  lstm-lab-push --model-dir runs/study/best/model --repo-id you/lstm-lab --dataset-repo-id you/lstm-lab-world
  python scripts/push_world.py ...     # the same, from a checkout

--world is a study's output folder (its world is pretrain/world) or a folder lstm-lab-make-world wrote. Then
`datasets.load_dataset("you/lstm-lab-world", "qa", split="qa_known_heldout")` loads it anywhere.
A mistake in the inputs exits with status 2 and writes nothing; a push that fails (no token, no network) with 1.
"""

import argparse
from pathlib import Path

from ..publishing.dataset_folder import find_world, write_dataset_folder
from ..publishing.hub import check_repo_id
from . import DEBUG_HELP, OneLineParser, publish, run_command

PROG = "lstm-lab-push-world"


def parse(argv: list[str]) -> argparse.Namespace:
    """The push's settings from `argv`: the repository id valid and `--world` a world (or a study's)."""
    parser = OneLineParser(prog=PROG, description=f"{__doc__}\n{DEBUG_HELP}")
    parser.add_argument("--world", required=True, help="a study's output folder, or a world lstm-lab-make-world wrote")
    parser.add_argument("--repo-id", required=True, help="the Hub dataset repository, namespace/name")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", metavar="OUT", help="write the folder that would be uploaded to OUT; send nothing")
    args = parser.parse_args(argv)
    check_repo_id(args.repo_id)
    args.world = find_world(args.world)
    return args


def push(args: argparse.Namespace) -> None:
    def write(out: Path) -> Path:
        return write_dataset_folder(out, args.world, args.repo_id)

    publish(write, args.repo_id, "dataset", args.private, args.dry_run)


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, push, argv)


if __name__ == "__main__":
    main()
