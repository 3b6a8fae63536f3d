"""Score a model's factuality on one QA split of a world and write every question, answer and verdict as JSON.

    python scripts/score_factuality.py --model runs/pretrain/model --world runs/pretrain/world --split qa_known_heldout
    python scripts/score_factuality.py --model DIR --adapter ADAPTER --world DIR --split qa_unknown_heldout --out r.json

Splits: qa_known_finetune, qa_known_heldout, qa_unknown_finetune, qa_unknown_heldout.
"""

import argparse
from pathlib import Path

import torch

from modeling.checkpoints import load_model_and_tokenizer
from modeling.files import write_json
from modeling.scoring import score_questions
from modeling.world import load_world_datasets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder written by save_pretrained")
    parser.add_argument("--adapter", help="folder of a PEFT (LoRA) adapter to apply on the model")
    parser.add_argument("--world", required=True, help="folder written by scripts/make_world.py")
    parser.add_argument("--split", required=True, help="a QA split of the world")
    parser.add_argument("--out", help="report path; default: runs/factuality/<split>.json")
    parser.add_argument("--limit", type=int, help="score only the first N questions")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    splits = load_world_datasets(args.world)
    qa_splits = [name for name in splits if name.startswith("qa_")]
    if args.split not in qa_splits:
        raise SystemExit(f"--split must be one of {qa_splits}, got {args.split!r}")
    questions = splits[args.split]
    if args.limit is not None:
        questions = questions.select(range(min(args.limit, len(questions))))
    model, tokenizer = load_model_and_tokenizer(args.model, args.adapter, device=args.device)
    report = score_questions(model, tokenizer, questions, args.batch_size, args.max_new_tokens)
    report = {"model": args.model, "adapter": args.adapter, "world": args.world, "split": args.split, **report}
    # Not inside the model folder by default: that folder is what gets pushed to the Hub.
    out = write_json(report, args.out or Path("runs") / "factuality" / f"{args.split}.json")
    metrics = report["metrics"]
    print(
        f"{args.split}: {len(questions)} questions | accuracy {metrics['accuracy']:.3f} | hallucination "
        f"{metrics['hallucination_rate']:.3f} | abstention {metrics['abstention_rate']:.3f} | "
        f"auroc {metrics['auroc']:.3f}"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
