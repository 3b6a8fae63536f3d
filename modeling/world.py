"""A fully known world: invented people, biographies of some of them, and questions about all of them.

Every fact a model could state about a person is on record, so every answer can be marked right or wrong without a
judge. The design follows two papers:

- Allen-Zhu & Li (2023), "Physics of Language Models: Part 3.1": each person has fixed attributes and the pretraining
  corpus holds biographies written from several paraphrase templates in shuffled sentence order. How many different
  biographies a person gets (`exposure`) is the knowledge augmentation that lets a model answer questions later.
- Gekhman et al. (2024), "Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?": half of the people
  (`group="unknown"`) never appear in pretraining, so fine-tuning on questions about them teaches facts the model
  cannot know. Each person's `knowledge` category is set by design from their exposure: `highly_known`,
  `weakly_known` or `unknown`.

Within each group a share of the people is held out of fine-tuning (`role="heldout"`) to measure what fine-tuning
did to answers it never trained on. Optionally a share of the known people (`role="pretraining"`) also has their
questions, answered, in the pretraining corpus: Allen-Zhu & Li's "mixed training", which teaches a model during
pretraining to answer questions from what biographies told it, so that it can answer about people it only read
biographies of. Such people are neither fine-tuned on nor held out. Splits are disjoint by person.

Everything is drawn from `random.Random` instances seeded from `WorldConfig.seed` and the name of the step, so the
same config gives the same world and a change to one step (say, `exposures`) leaves the draws of the others (names,
attributes) as they were.

A saved world is a folder:

- `knowledge_base.json`: the config and every person with their attributes, biographies and questions.
- `dataset/`: a `datasets.DatasetDict` with the splits `pretrain` (columns `text`, `person_id`: one row per
  biography of a known person, and one per answered question of a `pretraining` person) and `qa_{group}_{role}` for
  the four combinations of `known`/`unknown` and `finetune`/`heldout` (columns in `QA_FEATURES`: one row per person and
  attribute), and `qa_known_pretraining` when the world has `pretraining` people.
"""

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, DatasetDict, Features, Value, load_from_disk

from .factuality.world_schema import (
    ABSTAIN_ANSWER,
    ATTRIBUTES,
    BIOGRAPHY_TEMPLATES,
    FIRST_NAMES,
    LAST_NAMES,
    MIDDLE_NAMES,
    POOLS,
    QUESTION_TEMPLATES,
    format_answer,
    format_prompt,
)

GROUPS = ("known", "unknown")
ROLES = ("finetune", "heldout")  # every group has both, and a QA split for each
PRETRAINING_ROLE = "pretraining"  # known people only, and only when WorldConfig.pretraining_qa_fraction > 0
KNOWLEDGE_CATEGORIES = ("highly_known", "weakly_known", "unknown")

PRETRAIN_SPLIT = "pretrain"
KNOWLEDGE_BASE_FILE = "knowledge_base.json"
DATASET_DIR = "dataset"

MAX_PEOPLE = len(FIRST_NAMES) * len(MIDDLE_NAMES) * len(LAST_NAMES)  # one unique full name each

PRETRAIN_FEATURES = Features({"text": Value("string"), "person_id": Value("int64")})
QA_FEATURES = Features(
    {
        "person_id": Value("int64"),
        "name": Value("string"),
        "attribute": Value("string"),
        "question": Value("string"),
        "prompt": Value("string"),  # format_prompt(question)
        "answer": Value("string"),  # the truth, as the model must generate it after the prompt: format_answer(value)
        # What a model that knows only its pre-training should say: the truth about known people, and
        # format_answer(ABSTAIN_ANSWER) about unknown ones (the target of "I don't know" tuning).
        "honest_answer": Value("string"),
        "group": Value("string"),
        "role": Value("string"),
        "knowledge": Value("string"),
        "exposure": Value("int64"),
    }
)


def qa_split_name(group: str, role: str) -> str:
    """Name of the QA split for one group and role, e.g. `qa_unknown_finetune`."""
    return f"qa_{group}_{role}"


@dataclass
class WorldConfig:
    r"""
    How big the world is and how it is split. Fractions are turned into counts by rounding to the nearest integer.

    Args:
        num_people (`int`, *optional*, defaults to 1000):
            Number of people, at most `MAX_PEOPLE` (144,000). The default's pretraining corpus, about 2,300
            biographies, trains a small model in a few CPU minutes.
        seed (`int`, *optional*, defaults to 0):
            Seed of every random draw.
        unknown_fraction (`float`, *optional*, defaults to 0.5):
            Share of the people who never appear in the pretraining corpus. In [0, 1].
        heldout_fraction (`float`, *optional*, defaults to 0.2):
            Share of each group (known, unknown) kept out of fine-tuning. In [0, 1].
        pretraining_qa_fraction (`float`, *optional*, defaults to 0.0):
            Share of the known people whose questions, each followed by its answer, join their biographies in the
            pretraining corpus (role `pretraining`). In [0, 1], and at most 1 - `heldout_fraction`.
        exposures (`list[int]`, *optional*, defaults to `[1, 3, 10]`):
            The numbers of distinct biographies a known person can get. They are dealt out in turn over the shuffled
            people of each split, so every exposure is equally common in every split.
        highly_known_min_exposure (`int`, *optional*, defaults to 10):
            A known person with at least this many biographies is `highly_known`, one with fewer `weakly_known`.

    Example:

        >>> config = WorldConfig(num_people=10, exposures=(1, 2))
        >>> config.exposures
        [1, 2]
    """

    num_people: int = field(default=1000, metadata={"help": "Number of people in the world."})
    seed: int = field(default=0, metadata={"help": "Seed of every random draw."})
    unknown_fraction: float = field(default=0.5, metadata={"help": "Share of people never in pretraining."})
    heldout_fraction: float = field(default=0.2, metadata={"help": "Share of each group kept out of fine-tuning."})
    pretraining_qa_fraction: float = field(
        default=0.0, metadata={"help": "Share of known people whose answered questions are pretraining text too."}
    )
    exposures: list[int] = field(
        default_factory=lambda: [1, 3, 10], metadata={"help": "Numbers of biographies a known person can get."}
    )
    highly_known_min_exposure: int = field(
        default=10, metadata={"help": "Fewest biographies that make a known person highly known."}
    )

    def __post_init__(self):
        if not _is_int(self.num_people) or not 1 <= self.num_people <= MAX_PEOPLE:
            raise ValueError(f"WorldConfig.num_people must be an integer in [1, {MAX_PEOPLE}], got {self.num_people!r}")
        if not _is_int(self.seed):
            raise ValueError(f"WorldConfig.seed must be an integer, got {self.seed!r}")
        for name in ("unknown_fraction", "heldout_fraction", "pretraining_qa_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"WorldConfig.{name} must be a number in [0, 1], got {value!r}")
        if self.heldout_fraction + self.pretraining_qa_fraction > 1:
            raise ValueError(
                f"WorldConfig.heldout_fraction ({self.heldout_fraction}) and pretraining_qa_fraction "
                f"({self.pretraining_qa_fraction}) are shares of the same known people and add up to more than 1"
            )
        if (
            not isinstance(self.exposures, (list, tuple))
            or not self.exposures
            or not all(_is_int(exposure) and exposure >= 1 for exposure in self.exposures)
        ):
            raise ValueError(
                f"WorldConfig.exposures must be a non-empty list of positive integers, got {self.exposures!r}"
            )
        # A list whatever came in, so a config equals itself after a round trip through JSON.
        self.exposures = list(self.exposures)
        if not _is_int(self.highly_known_min_exposure) or self.highly_known_min_exposure < 1:
            raise ValueError(
                "WorldConfig.highly_known_min_exposure must be a positive integer, "
                f"got {self.highly_known_min_exposure!r}"
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Person:
    """One person of the world and everything the world says about them.

    `biographies` is empty for unknown people; `questions` holds one question per attribute.
    """

    person_id: int
    name: str
    attributes: dict[str, str]
    group: str
    role: str
    exposure: int
    knowledge: str
    biographies: list[str]
    questions: dict[str, str]

    def record(self) -> dict[str, str]:
        """The person as the `factuality` metric's "biography" config takes a reference: name and attributes."""
        return {"name": self.name, **self.attributes}


@dataclass
class World:
    """The people of a world and the config that drew them."""

    config: WorldConfig
    people: list[Person]

    def people_in(self, group: str, role: str | None = None) -> list[Person]:
        """The people of a group, in `person_id` order, optionally only those with the given role."""
        if group not in GROUPS:
            raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
        if role is not None and role not in (*ROLES, PRETRAINING_ROLE):
            raise ValueError(f"role must be one of {(*ROLES, PRETRAINING_ROLE)} or None, got {role!r}")
        return [person for person in self.people if person.group == group and role in (None, person.role)]


def knowledge_category(exposure: int, highly_known_min_exposure: int) -> str:
    """The Gekhman-style category a person gets by design from the number of biographies they have."""
    if exposure == 0:
        return "unknown"
    return "highly_known" if exposure >= highly_known_min_exposure else "weakly_known"


def _rng(config: WorldConfig, step: str) -> random.Random:
    # A string seed goes through SHA-512, not hash(), so the stream does not change with PYTHONHASHSEED.
    return random.Random(f"{config.seed}/{step}")


def _draw_names(num_people: int, rng: random.Random) -> list[str]:
    # Sampling indices of the (first, middle, last) product without replacement gives unique names in one pass.
    names = []
    for index in rng.sample(range(MAX_PEOPLE), num_people):
        index, last = divmod(index, len(LAST_NAMES))
        first, middle = divmod(index, len(MIDDLE_NAMES))
        names.append(f"{FIRST_NAMES[first]} {MIDDLE_NAMES[middle]} {LAST_NAMES[last]}")
    return names


def _write_biographies(name: str, attributes: dict[str, str], count: int, rng: random.Random) -> list[str]:
    """`count` distinct biographies: one sentence per attribute from a random template, sentences shuffled."""
    biographies: dict[str, None] = {}  # a dict keeps the order of first draw, unlike a set
    while len(biographies) < count:
        sentences = [
            rng.choice(BIOGRAPHY_TEMPLATES[attribute]).format(name=name, value=attributes[attribute])
            for attribute in ATTRIBUTES
        ]
        rng.shuffle(sentences)
        biographies[" ".join(sentences)] = None
    return list(biographies)


def generate_world(config: WorldConfig | None = None) -> World:
    """Draws the people of a world: names, attributes, group, role, exposure, biographies and questions."""
    config = config or WorldConfig()
    names = _draw_names(config.num_people, _rng(config, "names"))
    attribute_rng = _rng(config, "attributes")
    attributes = [{attribute: attribute_rng.choice(POOLS[attribute]) for attribute in ATTRIBUTES} for _ in names]

    # person_id -> (group, role, exposure)
    placement: dict[int, tuple[str, str, int]] = {}
    shuffled = list(range(config.num_people))
    _rng(config, "groups").shuffle(shuffled)
    num_unknown = round(config.num_people * config.unknown_fraction)
    for group, members in (("unknown", shuffled[:num_unknown]), ("known", shuffled[num_unknown:])):
        num_heldout = round(len(members) * config.heldout_fraction)
        num_pretraining = round(len(members) * config.pretraining_qa_fraction) if group == "known" else 0
        # Rounded separately, the two shares can exceed the group (3 people at 0.5 and 0.5 round to 2 + 2).
        num_pretraining = min(num_pretraining, len(members) - num_heldout)
        cells = {
            "heldout": members[:num_heldout],
            PRETRAINING_ROLE: members[num_heldout : num_heldout + num_pretraining],
            "finetune": members[num_heldout + num_pretraining :],
        }
        for role, cell in cells.items():
            for position, person_id in enumerate(cell):
                exposure = config.exposures[position % len(config.exposures)] if group == "known" else 0
                placement[person_id] = (group, role, exposure)

    biography_rng = _rng(config, "biographies")
    question_rng = _rng(config, "questions")
    people = []
    for person_id, (name, person_attributes) in enumerate(zip(names, attributes, strict=True)):
        group, role, exposure = placement[person_id]
        people.append(
            Person(
                person_id=person_id,
                name=name,
                attributes=person_attributes,
                group=group,
                role=role,
                exposure=exposure,
                knowledge=knowledge_category(exposure, config.highly_known_min_exposure),
                biographies=_write_biographies(name, person_attributes, exposure, biography_rng),
                questions={
                    attribute: question_rng.choice(QUESTION_TEMPLATES[attribute]).format(name=name)
                    for attribute in ATTRIBUTES
                },
            )
        )
    return World(config=config, people=people)


def _qa_rows(people: list[Person]) -> list[dict]:
    return [
        {
            "person_id": person.person_id,
            "name": person.name,
            "attribute": attribute,
            "question": person.questions[attribute],
            "prompt": format_prompt(person.questions[attribute]),
            "answer": format_answer(person.attributes[attribute]),
            "honest_answer": format_answer(person.attributes[attribute] if person.group == "known" else ABSTAIN_ANSWER),
            "group": person.group,
            "role": person.role,
            "knowledge": person.knowledge,
            "exposure": person.exposure,
        }
        for person in people
        for attribute in ATTRIBUTES
    ]


def _to_dataset(rows: list[dict], features: Features) -> Dataset:
    # `Dataset.from_list` encodes row by row (9 s for the QA rows of 100,000 people); arrow builds the table at once.
    return Dataset(pa.Table.from_pylist(rows, schema=features.arrow_schema))


def to_dataset_dict(world: World) -> DatasetDict:
    """The world's splits: `pretrain` and one `qa_{group}_{role}` split per group and role.

    Raises:
        ValueError: naming the splits that would be empty.
    """
    pretrain = [
        {"text": biography, "person_id": person.person_id}
        for person in world.people_in("known")
        for biography in person.biographies
    ]
    pretraining_qa = _qa_rows(world.people_in("known", PRETRAINING_ROLE))
    pretrain += [{"text": row["prompt"] + row["answer"], "person_id": row["person_id"]} for row in pretraining_qa]
    # Shuffled so that a person's biographies are spread over the corpus instead of arriving back to back.
    _rng(world.config, "pretrain").shuffle(pretrain)
    splits = {PRETRAIN_SPLIT: _to_dataset(pretrain, PRETRAIN_FEATURES)}
    for group in GROUPS:
        for role in ROLES:
            rows = _qa_rows(world.people_in(group, role))
            splits[qa_split_name(group, role)] = _to_dataset(rows, QA_FEATURES)
    if pretraining_qa:
        splits[qa_split_name("known", PRETRAINING_ROLE)] = _to_dataset(pretraining_qa, QA_FEATURES)
    empty = [name for name, split in splits.items() if split.num_rows == 0]
    if empty:  # a split no one can train or be scored on (and that `datasets` cannot load once saved)
        raise ValueError(
            f"A world of num_people={world.config.num_people} has no rows in {empty}; allowed: a world whose every "
            "group and role has people (raise num_people, or move unknown_fraction and heldout_fraction off 0 and 1)"
        )
    return DatasetDict(splits)


def draw_finetune_set(
    world: World, size: int, unknown_fraction: float, seed: int, abstain_on_unknown: bool = False
) -> Dataset:
    """Draws `size` distinct fine-tuning questions about the fine-tune people, `unknown_fraction` of them (rounded)
    about unknown people, in random order.

    With `abstain_on_unknown=True` the answer to every question about an unknown person becomes
    `format_answer(ABSTAIN_ANSWER)`: tuning the model to say "I don't know" where it cannot know.

    Example:

        >>> world = generate_world(WorldConfig(num_people=20))
        >>> finetune = draw_finetune_set(world, size=10, unknown_fraction=0.5, seed=0)
        >>> finetune["group"].count("unknown")
        5
    """
    if not _is_int(size) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if (
        isinstance(unknown_fraction, bool)
        or not isinstance(unknown_fraction, (int, float))
        or not 0 <= unknown_fraction <= 1
    ):
        raise ValueError(f"unknown_fraction must be a number in [0, 1], got {unknown_fraction!r}")
    num_unknown = round(size * unknown_fraction)
    rng = random.Random(seed)
    rows = []
    for group, count in (("known", size - num_unknown), ("unknown", num_unknown)):
        available = _qa_rows(world.people_in(group, "finetune"))
        if count > len(available):
            raise ValueError(
                f"draw_finetune_set needs {count} questions about {group} fine-tune people but the world has "
                f"{len(available)}: lower size or unknown_fraction, or generate a world with more people"
            )
        drawn = rng.sample(available, count)
        if abstain_on_unknown:
            for row in drawn:
                row["answer"] = row["honest_answer"]
        rows += drawn
    rng.shuffle(rows)
    return _to_dataset(rows, QA_FEATURES)


def save_world(world: World, out_dir: str | Path) -> Path:
    """Writes `knowledge_base.json` and the `dataset/` folder of splits into `out_dir`, and returns its path.

    The JSON has sorted keys and a fixed layout, so the same config gives a byte-identical file.

    Raises:
        ValueError: as `to_dataset_dict`, before anything is written.
    """
    splits = to_dataset_dict(world)  # first: a world that cannot be saved whole writes nothing
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    knowledge_base = {
        "config": dataclasses.asdict(world.config),
        "people": [vars(person) for person in world.people],  # asdict would deep-copy every biography
    }
    (out_dir / KNOWLEDGE_BASE_FILE).write_text(json.dumps(knowledge_base, indent=1, sort_keys=True) + "\n")
    splits.save_to_disk(out_dir / DATASET_DIR)
    return out_dir


def load_world(directory: str | Path) -> World:
    """Reads the world `save_world` wrote into `directory` back from its `knowledge_base.json`."""
    knowledge_base = json.loads((Path(directory) / KNOWLEDGE_BASE_FILE).read_text())
    return World(
        config=WorldConfig(**knowledge_base["config"]),
        people=[Person(**person) for person in knowledge_base["people"]],
    )


def load_world_datasets(directory: str | Path) -> DatasetDict:
    """The splits `save_world` wrote into `directory`."""
    return load_from_disk(str(Path(directory) / DATASET_DIR))


__all__ = [
    "DATASET_DIR",
    "GROUPS",
    "KNOWLEDGE_BASE_FILE",
    "KNOWLEDGE_CATEGORIES",
    "MAX_PEOPLE",
    "PRETRAIN_FEATURES",
    "PRETRAINING_ROLE",
    "PRETRAIN_SPLIT",
    "QA_FEATURES",
    "ROLES",
    "Person",
    "World",
    "WorldConfig",
    "draw_finetune_set",
    "generate_world",
    "knowledge_category",
    "load_world",
    "load_world_datasets",
    "qa_split_name",
    "save_world",
    "to_dataset_dict",
]
