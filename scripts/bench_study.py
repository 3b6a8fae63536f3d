"""Where the default study's time goes: the seconds of each part of a finished study, and its total against the
15-minute budget.

.venv/bin/python scripts/study.py --output_dir runs/study_bench --overwrite_output_dir true   # a fresh run
.venv/bin/python scripts/bench_study.py runs/study_bench/results.json
"""

import argparse
import json

from modeling.study.report import time_breakdown

BUDGET_SECONDS = 15 * 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="?", default="runs/study/results.json", help="a study's results.json")
    with open(parser.parse_args().results, encoding="utf-8") as file:
        results = json.load(file)
    if results.get("reused"):
        raise SystemExit(
            f"This study reused {', '.join(results['reused'])} from an earlier run, so its times are not one run's: "
            "time a fresh run (--overwrite_output_dir true, as above)"
        )
    parts = time_breakdown(results)
    total = sum(results["timings"].values())  # the stages' wall-clock time, so "other" shows what no part covers
    parts.append(("other (data, files, best model)", total - sum(seconds for _, seconds in parts)))
    print(f"{'part':34s} {'seconds':>8s} {'share':>6s}")
    for part, seconds in parts:
        print(f"{part:34s} {seconds:8.0f} {seconds / max(total, 1e-9):6.1%}")
    print(f"{'total':34s} {total:8.0f}; {total / BUDGET_SECONDS:.2f} of the 15-minute budget (target <= 1)")
    slowest = max(results["conditions"], key=lambda c: c.get("seconds") or 0.0)
    print(f"{len(results['conditions'])} conditions; the slowest, {slowest['name']}, took {slowest['seconds']:.0f} s")


if __name__ == "__main__":
    main()
