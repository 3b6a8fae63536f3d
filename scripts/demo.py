"""The demo: three models of a study answer questions about the people of its world, side by side, with confidence
and verdict (a Gradio app). Served locally, or written out (and pushed) as a Hugging Face Space.

    python scripts/demo.py                                   # serves runs/study on http://127.0.0.1:7860
    python scripts/demo.py --study runs/study --port 7861
    python scripts/demo.py --space-id you/lstm-lab-demo --dry-run runs/hub/space   # the Space folder; sends nothing
    python scripts/demo.py --space-id you/lstm-lab-demo --model-repo you/lstm-lab  # push the Space (needs a token)
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a lab demo

from modeling.publishing.demo import DemoLab  # noqa: E402
from modeling.publishing.demo_app import THEME, build_app  # noqa: E402
from modeling.publishing.hub import PushError, check_repo_id, push_folder  # noqa: E402
from modeling.publishing.space import write_space_folder  # noqa: E402
from modeling.threads import set_num_threads  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--study", default="runs/study", help="a study's output folder (default: runs/study)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--space-id", help="write (--dry-run) or push the demo as this Hub Space, namespace/name")
    parser.add_argument("--model-repo", help="Hub id of the model published from the study, named on the Space card")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--dry-run", metavar="OUT", help="with --space-id: write the Space folder to OUT, send nothing")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.dry_run and not args.space_id:
        raise SystemExit("--dry-run writes a Space folder: give --space-id too")
    if not (Path(args.study) / "results.json").is_file():
        raise SystemExit(f"{args.study} holds no results.json: run scripts/study.py first, or give --study DIR")
    try:
        if args.space_id:
            check_repo_id(args.space_id)
            if args.dry_run:
                out = write_space_folder(args.dry_run, args.study, args.model_repo)
                print(f"dry run: wrote the Space folder for {args.space_id} into {out}; nothing was sent")
                return
            with tempfile.TemporaryDirectory() as tmp:
                out = write_space_folder(Path(tmp) / "space", args.study, args.model_repo)
                url = push_folder(out, args.space_id, repo_type="space", private=args.private)
            print(f"pushed the Space {args.space_id}: {url}")
            return
        set_num_threads()
        lab = DemoLab(args.study)
    except (FileExistsError, FileNotFoundError, ValueError, PushError) as error:
        print(f"demo: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    build_app(lab).launch(server_name=args.host, server_port=args.port, theme=THEME)


if __name__ == "__main__":
    main()
