"""The folder a world is published as, a Hugging Face dataset: what `scripts/push_world.py` uploads, or writes with
`--dry-run`. `datasets.load_dataset(folder_or_repo, config, split=...)` reads it without this package.

README.md                             the dataset card (dataset_card.md filled from the world); its `configs:` say
                                      which parquet file is which config and split
data/qa/<split>.parquet               config `qa` (the default): the world's QA splits `qa_{group}_{role}`
data/biographies/pretrain.parquet     config `biographies`: the pre-training corpus, split `pretrain`
data/dev_test/<split>.parquet         config `dev_test`: the held-out questions cut into the study's halves
                                      (`dev_test_splits`: dev_known, test_known, dev_unknown, test_unknown)
data/knowledge_base/people.parquet    config `knowledge_base`: one row per person
knowledge_base.json                   the world's own file, as it is, so `modeling.world.load_world` reads a snapshot

The `qa` and `biographies` splits are the world's saved `dataset/` splits, row for row and in order.
"""

import dataclasses
import json
import shlex
import shutil
from importlib import metadata
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, List, Value, load_from_disk
from huggingface_hub import DatasetCard, DatasetCardData

from ..factuality.world_schema import ABSTAIN_ANSWER, ATTRIBUTES
from ..study.conditions import dev_test_splits
from ..world import DATASET_DIR, KNOWLEDGE_BASE_FILE, PRETRAIN_SPLIT, PRETRAINING_ROLE, WorldConfig
from .hub import check_repo_id, write_folder

TEMPLATE = Path(__file__).with_name("dataset_card.md")
STUDY_WORLD = Path("pretrain") / "world"  # where a study keeps its world
DATA_DIR = "data"
# The configs, in the order the card lists them.
QA_CONFIG = "qa"  # the default
BIOGRAPHIES_CONFIG = "biographies"
DEV_TEST_CONFIG = "dev_test"
KNOWLEDGE_BASE_CONFIG = "knowledge_base"
PEOPLE_SPLIT = "people"  # the knowledge base's one split

# One row per person, the columns in the order of `modeling.world.Person`'s fields.
KNOWLEDGE_BASE_FEATURES = Features(
    {
        "person_id": Value("int64"),
        "name": Value("string"),
        "attributes": {attribute: Value("string") for attribute in ATTRIBUTES},
        "group": Value("string"),
        "role": Value("string"),
        "exposure": Value("int64"),
        "knowledge": Value("string"),
        "biographies": List(Value("string")),
        "questions": {attribute: Value("string") for attribute in ATTRIBUTES},
    }
)

# The role of each split on the card, by (config, split).
SPLIT_ROLES = {
    (QA_CONFIG, "qa_known_finetune"): (
        "questions about known people, the pool fine-tuning draws its known examples from"
    ),
    (QA_CONFIG, "qa_unknown_finetune"): (
        "questions about unknown people, the pool fine-tuning draws its unknown examples (new knowledge) from"
    ),
    (QA_CONFIG, "qa_known_heldout"): "questions about known people kept out of fine-tuning: evaluation",
    (QA_CONFIG, "qa_unknown_heldout"): "questions about unknown people kept out of fine-tuning: evaluation",
    (QA_CONFIG, f"qa_known_{PRETRAINING_ROLE}"): (
        "questions about the `pretraining` known people, whose answered questions are in the pre-training corpus"
    ),
    (BIOGRAPHIES_CONFIG, PRETRAIN_SPLIT): (
        "the pre-training corpus, shuffled (pre-training holds a random share of it out for its validation loss)"
    ),
    (DEV_TEST_CONFIG, "dev_known"): "`qa_known_heldout`, the study's dev half: where it chooses",
    (DEV_TEST_CONFIG, "test_known"): "`qa_known_heldout`, the study's test half: what it reports",
    (DEV_TEST_CONFIG, "dev_unknown"): "`qa_unknown_heldout`, the study's dev half: where it chooses",
    (DEV_TEST_CONFIG, "test_unknown"): "`qa_unknown_heldout`, the study's test half: what it reports",
    (KNOWLEDGE_BASE_CONFIG, PEOPLE_SPLIT): "every person: attributes, questions, biographies, group, role, exposure",
}

# Dataset-card size categories by the number of rows, as the Hub names them.
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def find_world(path: str | Path) -> Path:
    """The world folder `path` names: `path` itself if `save_world` (or `scripts/make_world.py`) wrote it, or the
    world of the study whose output folder it is (`pretrain/world`).

    Raises:
        FileNotFoundError: if `path` is neither.
    """
    path = Path(path)
    for folder in (path, path / STUDY_WORLD):
        if (folder / KNOWLEDGE_BASE_FILE).is_file() and (folder / DATASET_DIR / "dataset_dict.json").is_file():
            return folder
    raise FileNotFoundError(
        f"{path} is not a world: it is neither a folder scripts/make_world.py wrote ({KNOWLEDGE_BASE_FILE} and "
        f"{DATASET_DIR}/) nor a study's output folder (with {STUDY_WORLD.as_posix()}/)"
    )


def knowledge_base_dataset(people: list[dict]) -> Dataset:
    """One row per person of a `knowledge_base.json`'s `people`, with `KNOWLEDGE_BASE_FEATURES`."""
    return Dataset(pa.Table.from_pylist(people, schema=KNOWLEDGE_BASE_FEATURES.arrow_schema))


def world_configs(world_dir: Path, people: list[dict]) -> dict[str, dict[str, Dataset]]:
    """config -> split -> rows of the world in `world_dir` (whose `knowledge_base.json` lists `people`); without
    `dev_test` if a group has fewer than two held-out people, too few for the study's halves."""
    # In memory: the filters of `dev_test_splits` would otherwise write cache files into the world's folder.
    splits: DatasetDict = load_from_disk(str(world_dir / DATASET_DIR), keep_in_memory=True)
    configs = {
        QA_CONFIG: {name: split for name, split in splits.items() if name != PRETRAIN_SPLIT},
        BIOGRAPHIES_CONFIG: {PRETRAIN_SPLIT: splits[PRETRAIN_SPLIT]},
    }
    try:
        configs[DEV_TEST_CONFIG] = dev_test_splits(splits)
    except ValueError:
        pass
    configs[KNOWLEDGE_BASE_CONFIG] = {PEOPLE_SPLIT: knowledge_base_dataset(people)}
    return configs


def data_file(config: str, split: str) -> str:
    """Where a split's parquet file lies in the folder."""
    return f"{DATA_DIR}/{config}/{split}.parquet"


def make_world_command(config: WorldConfig, out: str = "world") -> str:
    """The `lstm-lab-make-world` command (`scripts/make_world.py`) that regenerates the world of `config` into `out`,
    every field spelt out."""
    flags = [
        f"--{name} {' '.join(map(str, value)) if isinstance(value, list) else repr(value)}"
        for name, value in dataclasses.asdict(config).items()
    ]
    lines = [""]  # a flag and its value stay on one line
    for flag in flags:
        if lines[-1] and len(lines[-1]) + len(flag) >= 96:
            lines.append("")
        lines[-1] = f"{lines[-1]} {flag}".lstrip()
    return " \\\n    ".join([f"lstm-lab-make-world --out {shlex.quote(out)}", *lines])


def _one_of(values: list) -> str:
    """`[1, 3, 10]` as "1, 3 or 10"."""
    *head, last = map(str, values)
    return f"{', '.join(head)} or {last}" if head else last


def size_category(num_rows: int) -> str:
    """The Hub's size category of a dataset of `num_rows` rows, e.g. "1K<n<10K"."""
    return next((name for bound, name in SIZE_CATEGORIES if num_rows < bound), "1M<n<10M")


def build_dataset_card(
    config: WorldConfig,
    configs: dict[str, dict[str, Dataset]],
    repo_id: str,
    template_path: str | Path = TEMPLATE,
) -> DatasetCard:
    """The card of the world drawn by `config`, whose splits are `configs` (see `world_configs`), to be published as
    `repo_id`. Its `configs:` metadata points each config and split at its parquet file (`data_file`), `qa` the
    default; the text gives the design, each split's role and size, the generator's settings, the command that
    regenerates the world and how to load it."""
    people = configs[KNOWLEDGE_BASE_CONFIG][PEOPLE_SPLIT]
    # dev_test repeats the held-out questions: not counted.
    num_rows = sum(
        rows.num_rows for name, splits in configs.items() if name != DEV_TEST_CONFIG for rows in splits.values()
    )
    data = DatasetCardData(
        pretty_name=f"Synthetic people world ({config.num_people} fictional people, seed {config.seed})",
        license="apache-2.0",
        language=["en"],
        annotations_creators=["machine-generated"],
        language_creators=["machine-generated"],
        multilinguality=["monolingual"],
        source_datasets=["original"],
        size_categories=[size_category(num_rows)],
        task_categories=["question-answering", "text-generation"],
        task_ids=["closed-domain-qa", "language-modeling"],
        tags=["synthetic", "hallucination", "factuality", "knowledge"],
        configs=[
            {
                "config_name": name,
                **({"default": True} if name == QA_CONFIG else {}),
                "data_files": [{"split": split, "path": data_file(name, split)} for split in splits],
            }
            for name, splits in configs.items()
        ],
    )
    help_texts = {field.name: field.metadata["help"] for field in dataclasses.fields(config)}
    return DatasetCard.from_template(
        data,
        template_path=str(template_path),
        repo_id=repo_id,
        pretty_name=data.pretty_name,
        num_people=config.num_people,
        config=config,
        counts={group: people["group"].count(group) for group in ("known", "unknown")},
        exposures=_one_of(config.exposures),
        attributes=ATTRIBUTES,
        abstain_answer=ABSTAIN_ANSWER,
        splits=[
            {
                "config": name,
                "name": split,
                "rows": rows.num_rows,
                "people": len(set(rows["person_id"])),
                "role": SPLIT_ROLES[name, split],
            }
            for name, splits in configs.items()
            for split, rows in splits.items()
        ],
        has_dev_test=DEV_TEST_CONFIG in configs,
        settings=[
            {"name": name, "value": value, "help": help_texts[name]}
            for name, value in dataclasses.asdict(config).items()
        ],
        command=make_world_command(config),
        version=metadata.version("lstm-hallucination-lab"),
    )


def write_dataset_folder(
    out: str | Path, world_dir: str | Path, repo_id: str, template_path: str | Path = TEMPLATE
) -> Path:
    """Write the folder that publishes the world in `world_dir` (a saved world, or a study's output folder) as the
    Hub dataset `repo_id` into `out`, and return its path.

    Raises:
        FileExistsError: if `out` exists and is not empty.
        FileNotFoundError: if `world_dir` is not a world (see `find_world`).
        ValueError: if `repo_id` is no Hub id.
    """
    check_repo_id(repo_id)
    world_dir = find_world(world_dir)
    knowledge_base = json.loads((world_dir / KNOWLEDGE_BASE_FILE).read_text(encoding="utf-8"))
    config = WorldConfig(**knowledge_base["config"])

    def fill(folder: Path) -> None:
        configs = world_configs(world_dir, knowledge_base["people"])
        for name, splits in configs.items():
            for split, rows in splits.items():
                (folder / data_file(name, split)).parent.mkdir(parents=True, exist_ok=True)
                rows.to_parquet(folder / data_file(name, split))
        shutil.copy2(world_dir / KNOWLEDGE_BASE_FILE, folder / KNOWLEDGE_BASE_FILE)
        build_dataset_card(config, configs, repo_id, template_path).save(folder / "README.md")

    return write_folder(out, fill)


__all__ = [
    "KNOWLEDGE_BASE_FEATURES",
    "build_dataset_card",
    "find_world",
    "knowledge_base_dataset",
    "make_world_command",
    "world_configs",
    "write_dataset_folder",
]
