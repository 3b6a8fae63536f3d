"""lm-evaluation-harness hooks of the `world_qa` tasks: the loader of a world's held-out questions and the scoring
of one answer with the `factuality` metric's rules.

The harness imports this file by its path, so it imports nothing from the `modeling` package: the metric's script
(`factuality.py`, with the `world_schema.py` it reads) is imported from the folder above this one, which an installed
package, a checkout and a copy of the metric folder all have.
"""

import functools
import importlib
import json
import sys
import types
from pathlib import Path

import datasets

METRIC_DIR = Path(__file__).resolve().parent.parent
SPLITS = ("qa_known_heldout", "qa_unknown_heldout")
PEOPLE = ("test", "dev", "all")
# Where `save_world`'s DatasetDict lies in the folder `world` names: a world folder, its dataset/ folder, a study's
# output folder.
SAVED_DATASETS = ("dataset", ".", "pretrain/world/dataset")


@functools.cache
def _metric_module(name: str) -> types.ModuleType:
    """`name` ("factuality" or "world_schema") from the metric folder, imported as a module of a package made of
    that folder: `factuality.py` imports `world_schema` relatively, as `evaluate` loads it."""
    package = "_world_qa_factuality_metric"
    if package not in sys.modules:
        module = types.ModuleType(package)
        module.__path__ = [str(METRIC_DIR)]
        sys.modules[package] = module
    return importlib.import_module(f"{package}.{name}")


def load_world_qa(world: str | None = None, people: str = "test", **_) -> datasets.DatasetDict:
    """The held-out questions of `world`, the task's `custom_dataset`: lm-eval calls it with the model's arguments
    and `--metadata`, so `world` and `people` come from `--metadata '{"world": ..., "people": ...}'`.

    Args:
        world: a world folder written by `save_world`, its `dataset/` folder, a study's output folder (its world is
            `pretrain/world`), or else anything `datasets.load_dataset(world, "qa")` reads: the pushed dataset's Hub
            id or a local copy of it.
        people: "test" (the default: the people the study reports on), "dev" or "all" held-out people. The study's
            halves: in order of person id, every other person goes to dev, starting with the first.

    Returns:
        `qa_known_heldout` and `qa_unknown_heldout`, with the world's columns.
    """
    if not world:
        example = json.dumps({"world": "<world folder or Hub dataset id>"})
        raise ValueError(f"Name the world to ask: --metadata '{example}' (see the task's README)")
    if people not in PEOPLE:
        raise ValueError(f"people must be one of {', '.join(PEOPLE)}, got {people!r}")
    folder = Path(world).expanduser()
    saved = [folder / path for path in SAVED_DATASETS if (folder / path / "dataset_dict.json").is_file()]
    if saved:
        # In memory: filtering a saved dataset would otherwise write cache files into the world's folder.
        splits = datasets.load_from_disk(str(saved[0]), keep_in_memory=True)
    else:
        splits = datasets.load_dataset(world, "qa")
    return datasets.DatasetDict({split: _half(splits[split], people) for split in SPLITS})


def _half(questions: datasets.Dataset, people: str) -> datasets.Dataset:
    """The questions about the `people` half of the held-out people (see `load_world_qa`)."""
    if people == "all":
        return questions
    dev = set(sorted(set(questions["person_id"]))[::2])
    keep = people == "dev"
    return questions.filter(lambda person_id: (person_id in dev) == keep, input_columns="person_id")


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """The verdict on the model's answer to `doc`, as the study's scorer gives it, as three 0/1 scores whose means
    are the `factuality` metric's rates: the answer is the continuation up to its first newline, stripped
    (`parse_answer`), judged against the question's `answer` (`classify_answers`)."""
    answer = _metric_module("world_schema").parse_answer(results[0])
    (verdict,) = _metric_module("factuality").classify_answers([answer], [doc["answer"]])
    return {
        "accuracy": float(verdict == "correct"),
        "hallucination_rate": float(verdict == "hallucinated"),
        "abstention_rate": float(verdict == "abstained"),
    }
