"""Publish a model of a study on the Hugging Face Hub: weights, tokenizer, code, a model card filled from the study's
results (hub_card.md), its plots, and a LoRA adapter with its own card when given. One commit.

    # first look at exactly what would be sent:
    python scripts/push_to_hub.py --model-dir runs/study/best/model --repo-id you/lstm-lab --dry-run runs/hub/best
    # then send it (needs `hf auth login` or HF_TOKEN):
    python scripts/push_to_hub.py --model-dir runs/study/best/model --repo-id you/lstm-lab
    # the pre-trained model with a LoRA adapter of the study in adapter/:
    python scripts/push_to_hub.py --model-dir runs/study/pretrain/model \\
        --adapter runs/study/conditions/lora_u0_n240_none/seed_0/adapter \\
        --repo-id you/lstm-lab-lora --dry-run runs/hub/lora

The study folder defaults to the one the model lies in (pretrain/model, best/model or conditions/<name>/seed_<S>/model).
"""

import argparse
import sys
import tempfile
from pathlib import Path

from modeling.publishing.card import find_study_model
from modeling.publishing.hub import PushError, check_repo_id, push_folder
from modeling.publishing.model_folder import write_model_folder

TEMPLATE = Path(__file__).resolve().parents[1] / "hub_card.md"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--model-dir", required=True, help="a saved model of a study")
    parser.add_argument("--repo-id", required=True, help="the Hub repository, namespace/name")
    parser.add_argument("--adapter", help="a LoRA adapter of the study on --model-dir, published in adapter/")
    parser.add_argument("--study", help="the study's output folder (default: found above --model-dir)")
    parser.add_argument("--base-model", help="Hub id of the model --model-dir was fine-tuned from, for the card")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument("--dry-run", metavar="OUT", help="write the folder that would be uploaded to OUT; send nothing")
    return parser.parse_args()


def find_study(model_dir: Path) -> Path:
    """The nearest folder above `model_dir` that holds a study's results.json."""
    for folder in model_dir.resolve().parents:
        if (folder / "results.json").is_file():
            return folder
    fail(f"No study's results.json above {model_dir}: give --study DIR")


def fail(message: str) -> None:
    print(f"push_to_hub: {message}", file=sys.stderr)
    raise SystemExit(1)


def main() -> None:
    args = parse_args()
    model_dir = Path(args.model_dir)
    if (model_dir / "adapter_config.json").is_file():
        fail(f"--model-dir {model_dir} is an adapter: give it as --adapter, and its base model as --model-dir")
    if not (model_dir / "config.json").is_file():
        fail(f"--model-dir {model_dir} is not a saved model: it has no config.json")
    study = Path(args.study) if args.study else find_study(model_dir)
    repo_id = args.repo_id
    folder_args = dict(
        model_dir=model_dir,
        study_dir=study,
        repo_id=repo_id,
        template_path=TEMPLATE,
        adapter_dir=args.adapter,
        base_model=args.base_model,
    )
    try:
        check_repo_id(repo_id)
        if find_study_model(study, model_dir).condition is not None and args.base_model is None:
            print("note: the card names a fine-tuned model's base model only with --base-model ID", flush=True)
        if args.dry_run:
            out = write_model_folder(args.dry_run, **folder_args)
            files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
            print(f"dry run: wrote the {len(files)} files that would go to {repo_id} into {out}; nothing was sent")
            return
        with tempfile.TemporaryDirectory() as tmp:
            out = write_model_folder(Path(tmp) / "upload", **folder_args)
            url = push_folder(out, repo_id, private=args.private)
    except (FileExistsError, FileNotFoundError, ValueError, PushError) as error:
        fail(str(error))
    print(f"pushed to {repo_id}: {url}")


if __name__ == "__main__":
    main()
