"""Publish a model of a study on the Hugging Face Hub: weights, tokenizer, code, a model card filled from the study's
results (hub_card.md), its plots, and a LoRA adapter with its own card when given. One commit.

  # first look at exactly what would be sent:
  lstm-lab-push --model-dir runs/study/best/model --repo-id you/lstm-lab --dry-run runs/hub/best
  # then send it (needs `hf auth login` or HF_TOKEN):
  lstm-lab-push --model-dir runs/study/best/model --repo-id you/lstm-lab
  # naming the dataset its world was published as (lstm-lab-push-world) on the card:
  lstm-lab-push --model-dir runs/study/best/model --repo-id you/lstm-lab --dataset-repo-id you/lstm-lab-world
  # the pre-trained model with a LoRA adapter of a study that ran LoRA (configs/study/full.yaml) in adapter/:
  lstm-lab-push --model-dir runs/study_full/pretrain/model \\
      --adapter runs/study_full/conditions/lora_u0_n240_none/seed_0/adapter \\
      --repo-id you/lstm-lab-lora --dry-run runs/hub/lora
  python scripts/push_to_hub.py ...     # the same, from a checkout

The study folder defaults to the one the model lies in (pretrain/model, best/model or conditions/<name>/seed_<S>/model).
A mistake in the inputs exits with status 2 and writes nothing; a push that fails (no token, no network) with 1.
"""

import argparse
from pathlib import Path

from ..publishing.card import find_study_model
from ..publishing.hub import check_repo_id
from ..publishing.model_folder import write_model_folder
from ..run_config import CHECKOUT
from . import DEBUG_HELP, OneLineParser, publish, run_command

PROG = "lstm-lab-push"
TEMPLATE = CHECKOUT / "hub_card.md"


def parse(argv: list[str]) -> argparse.Namespace:
    """The push's settings from `argv`: the repository ids valid, `--model-dir` a saved model (not an adapter) and
    the study it belongs to found."""
    parser = OneLineParser(prog=PROG, description=f"{__doc__}\n{DEBUG_HELP}")
    parser.add_argument("--model-dir", required=True, type=Path, help="a saved model of a study")
    parser.add_argument("--repo-id", required=True, help="the Hub repository, namespace/name")
    parser.add_argument("--adapter", help="a LoRA adapter of the study on --model-dir, published in adapter/")
    parser.add_argument("--study", type=Path, help="the study's output folder (default: found above --model-dir)")
    parser.add_argument("--base-model", help="Hub id of the model --model-dir was fine-tuned from, for the card")
    parser.add_argument(
        "--dataset-repo-id",
        help="the Hub dataset the study's world was published as (lstm-lab-push-world), named by the card's datasets",
    )
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", metavar="OUT", help="write the folder that would be uploaded to OUT; send nothing")
    args = parser.parse_args(argv)
    for repo_id in (args.repo_id, args.dataset_repo_id):
        if repo_id is not None:
            check_repo_id(repo_id)
    if (args.model_dir / "adapter_config.json").is_file():
        raise ValueError(
            f"--model-dir {args.model_dir} is an adapter: give it as --adapter, and its base model as --model-dir"
        )
    if not (args.model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model-dir {args.model_dir} is not a saved model: it has no config.json")
    args.study = args.study or find_study(args.model_dir)
    args.fine_tuned = find_study_model(args.study, args.model_dir).condition is not None
    return args


def find_study(model_dir: Path) -> Path:
    """The nearest folder above `model_dir` that holds a study's results.json.

    Raises:
        FileNotFoundError: if there is none.
    """
    for folder in model_dir.resolve().parents:
        if (folder / "results.json").is_file():
            return folder
    raise FileNotFoundError(f"No study's results.json above {model_dir}: give --study DIR")


def push(args: argparse.Namespace) -> None:
    def write(out: Path) -> Path:
        return write_model_folder(
            out,
            model_dir=args.model_dir,
            study_dir=args.study,
            repo_id=args.repo_id,
            template_path=TEMPLATE,
            adapter_dir=args.adapter,
            base_model=args.base_model,
            dataset_repo_id=args.dataset_repo_id,
        )

    publish(write, args.repo_id, "model", args.private, args.dry_run)
    if args.fine_tuned and args.base_model is None:  # after the work: an error, if any, stays one line
        print("note: the card names a fine-tuned model's base model only with --base-model ID", flush=True)


def main(argv: list[str] | None = None) -> None:
    run_command(PROG, parse, push, argv)


if __name__ == "__main__":
    main()
