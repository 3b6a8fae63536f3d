"""Where a profiled study's time went, by stage and by kind of work, from a py-spy raw profile.

    py-spy record -r 20 -f raw -o study.pyspy.txt -- .venv/bin/python scripts/study.py --output_dir runs/profiled
    .venv/bin/python scripts/profile_summary.py study.pyspy.txt

py-spy (a sampling profiler, installed apart: `pip install py-spy`) writes one line per distinct stack, its frames
from the outermost, then the number of samples. Each sample is put in the stage and the kind of work of the first
frame, from the innermost outwards, whose function name the tables below know; the rest is "other".
"""

import argparse
from collections import Counter

# Function names (as py-spy writes them, "name (file:line)") that mark a stage of the study.
STAGES = {
    "pretrain": "pre-training",
    "probe_knowledge": "probe",
    "evaluate_detectors": "fine-tuning: detector",
    "run_condition": "fine-tuning",
    "write_report": "report and plots",
}
# ... and a kind of work, innermost first.
KINDS = {
    "backward": "backward",
    "step": "optimizer step",  # torch.optim.Optimizer.step and its wrappers
    "generate": "generation",
    "compute": "metric (evaluate)",
    "question_states": "hidden states (detector)",
    "prediction_step": "evaluation loss",
    "compute_loss": "forward (training)",
    "from_pretrained": "loading models",
    "save_pretrained": "saving models",
    "map": "data (datasets)",
    "filter": "data (datasets)",
    "__init__": "set-up",
}


def classify(frames: list[str], table: dict[str, str]) -> str:
    for frame in reversed(frames):
        name = frame.split(" (")[0].rsplit(".", 1)[-1]  # py-spy names methods "Class.method"
        if name in table:
            return table[name]
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", help="py-spy raw output (-f raw)")
    parser.add_argument("--rate", type=float, default=20, help="the samples per second it was recorded at")
    args = parser.parse_args()
    by_stage, by_kind = Counter(), Counter()
    with open(args.profile, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            stage = classify(frames, STAGES)
            by_stage[stage] += int(count)
            by_kind[(stage, classify(frames, KINDS))] += int(count)
    total = sum(by_stage.values())
    print("| stage | kind of work | seconds | share |\n|---|---|---:|---:|")
    for stage, stage_samples in by_stage.most_common():
        print(f"| **{stage}** | all | {stage_samples / args.rate:.0f} | {stage_samples / total:.0%} |")
        for (kind_stage, kind), samples in by_kind.most_common():
            if kind_stage == stage and samples / total >= 0.005:
                print(f"| | {kind} | {samples / args.rate:.0f} | {samples / total:.0%} |")
    print(f"| total | | {total / args.rate:.0f} | 100% |")


if __name__ == "__main__":
    main()
