"""How fast the demo answers: seconds per question (all three models) against bare greedy `generate` calls of the same
three prompts and lengths, measured in the same run, and against the one-second target.

    python scripts/bench_demo.py [runs/study]
"""

import argparse
import statistics

import torch

from modeling.publishing.demo import DemoLab
from modeling.threads import set_num_threads
from modeling.timing import timed


def bare_generate(lab: DemoLab, answers: list) -> None:
    """The irreducible part of one question: a greedy generate per model, of its prompt and as many new tokens as it
    wrote (its answer and the end of text)."""
    for answer in answers:
        model, tokenizer = lab.models[answer.model]
        batch = tokenizer([answer.prompt], return_tensors="pt")
        length = len(tokenizer(answer.answer, add_special_tokens=False)["input_ids"]) + 1
        with torch.inference_mode():
            model.generate(**batch, max_new_tokens=length, min_new_tokens=length, do_sample=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="runs/study", help="a study's output folder (default: runs/study)")
    study = parser.parse_args().study
    threads = set_num_threads()
    lab = DemoLab(study)
    people = lab.world.people[:: max(1, len(lab.world.people) // 10)][:10]
    questions = [(p.name, q) for p in people for q in lab.questions_for(p)[::4]]
    lab.ask(*questions[0])  # warm-up
    demo, bare = [], []
    for name, question in questions:
        answers = []
        demo.append(timed(lambda n=name, q=question, out=answers: out.extend(lab.ask(n, q)[1])))
        bare.append(timed(lambda out=answers: bare_generate(lab, out)))
    median, bare_median = statistics.median(demo), statistics.median(bare)
    print(f"{len(questions)} questions, {threads} thread(s)")
    print(f"demo: median {median:.3f} s, max {max(demo):.3f} s per question (three models)")
    print(f"bare generate of the same: median {bare_median:.3f} s; demo / bare = {median / bare_median:.2f}")
    print(f"median / 1 s target = {median:.2f}")


if __name__ == "__main__":
    main()
