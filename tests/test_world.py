"""The world generator: determinism, splits, exposure, fine-tuning draws, saving and the make_world CLI."""

import dataclasses
import doctest
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import checkout_env

import modeling.world
from modeling.factuality.world_schema import ABSTAIN_ANSWER, ATTRIBUTES, POOLS, format_answer, format_prompt
from modeling.world import (
    GROUPS,
    KNOWLEDGE_BASE_FILE,
    MAX_PEOPLE,
    PRETRAIN_SPLIT,
    QA_FEATURES,
    ROLES,
    Person,
    World,
    WorldConfig,
    draw_finetune_set,
    generate_world,
    load_world,
    load_world_datasets,
    qa_split_name,
    save_world,
    to_dataset_dict,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# 60 people: 30 unknown and 30 known, 6 of each held out; exposures 1, 3 and 10 dealt out over each split.
SMALL = dict(num_people=60, seed=7, unknown_fraction=0.5, heldout_fraction=0.2, exposures=[1, 3, 10])


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(WorldConfig(**SMALL))


def test_same_seed_gives_the_same_world_and_a_byte_identical_knowledge_base(world, tmp_path):
    again = generate_world(WorldConfig(**SMALL))
    assert again.people == world.people
    save_world(world, tmp_path / "a")
    save_world(again, tmp_path / "b")
    assert (tmp_path / "a" / KNOWLEDGE_BASE_FILE).read_bytes() == (tmp_path / "b" / KNOWLEDGE_BASE_FILE).read_bytes()


# Saves the world of the config given as JSON into a folder and prints where the package came from.
SAVE_WORLD = """
import json, sys
import modeling.world as world
world.save_world(world.generate_world(world.WorldConfig(**json.loads(sys.argv[1]))), sys.argv[2])
print(world.__file__)
"""


def test_same_seed_gives_the_same_world_in_a_fresh_process_whatever_the_hash_seed(world, tmp_path):
    """Python salts the hash of a str per process (PYTHONHASHSEED), so a draw seeded from hash() passes every test
    that builds two worlds in one process and still gives another world in each run."""
    save_world(world, tmp_path / "here")
    processes = {
        hash_seed: subprocess.Popen(
            [sys.executable, "-c", SAVE_WORLD, json.dumps(SMALL), hash_seed],
            cwd=tmp_path,
            env={**checkout_env(), "PYTHONHASHSEED": hash_seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for hash_seed in ("1", "2")  # both run at once
    }
    outputs = {hash_seed: process.communicate(timeout=120) for hash_seed, process in processes.items()}
    pretrain = to_dataset_dict(world)[PRETRAIN_SPLIT][:]  # its order is a draw of its own, not in the JSON
    for hash_seed, (stdout, stderr) in outputs.items():
        assert processes[hash_seed].returncode == 0, stderr
        assert stdout.strip() == modeling.world.__file__
        saved = tmp_path / hash_seed
        assert (saved / KNOWLEDGE_BASE_FILE).read_bytes() == (tmp_path / "here" / KNOWLEDGE_BASE_FILE).read_bytes()
        assert load_world_datasets(saved)[PRETRAIN_SPLIT][:] == pretrain


# Person fields by the step that draws them. Names, attributes and questions come from streams of their own that only
# seed and num_people feed; group and role from the placement.
DRAWN = ("name", "attributes", "questions")
PLACED = ("group", "role")


@pytest.mark.parametrize(
    "change, kept, counted, counts",
    [
        # 24 fine-tune and 6 held-out known people: 2 and 5 dealt out 12 + 3 times each.
        (dict(exposures=[2, 5]), DRAWN + PLACED, "exposure", {0: 30, 2: 15, 5: 15}),
        # A threshold, no draw: only the category moves, and those with exposure 3 (8 + 2) become highly known.
        (
            dict(highly_known_min_exposure=3),
            DRAWN + PLACED + ("exposure", "biographies"),
            "knowledge",
            {"unknown": 30, "highly_known": 20, "weakly_known": 10},
        ),
        (dict(unknown_fraction=0.25), DRAWN, "group", {"unknown": 15, "known": 45}),
        # Roles are dealt within each group, so the groups stay; 15 of each 30 are held out.
        (dict(heldout_fraction=0.5), DRAWN + ("group",), "role", {"heldout": 30, "finetune": 30}),
        # Of the 30 known people, 6 held out as before and round(30 * 0.4) = 12 with their questions pre-trained on.
        (
            dict(pretraining_qa_fraction=0.4),
            DRAWN + ("group",),
            "role",
            {"heldout": 12, "pretraining": 12, "finetune": 36},
        ),
    ],
    ids=["exposures", "highly-known-min-exposure", "unknown-fraction", "heldout-fraction", "pretraining-qa-fraction"],
)
def test_a_change_to_one_step_leaves_the_draws_of_the_others_as_they_were(world, change, kept, counted, counts):
    """What world.py promises; the counts of the changed field show that the change took effect."""
    changed = generate_world(WorldConfig(**{**SMALL, **change}))
    assert [person.person_id for person in changed.people] == [person.person_id for person in world.people]
    for before, after in zip(world.people, changed.people, strict=True):
        assert {name: getattr(after, name) for name in kept} == {name: getattr(before, name) for name in kept}
    assert Counter(getattr(person, counted) for person in changed.people) == counts


def renamed(person: Person, name: str) -> Person:
    """The person under another name, in their biographies and questions too."""
    return dataclasses.replace(
        person,
        name=name,
        biographies=[biography.replace(person.name, name) for biography in person.biographies],
        questions={attribute: question.replace(person.name, name) for attribute, question in person.questions.items()},
    )


def test_a_names_step_that_draws_more_leaves_the_other_draws_as_they_were(world, monkeypatch):
    """No config field changes the names alone, so a names step that takes one more number from its stream stands in
    for a change to that step: under their old names, the people must be exactly as they were."""
    draw_names = modeling.world._draw_names

    def draw_names_after_one_more_draw(num_people, rng):
        rng.random()
        return draw_names(num_people, rng)

    monkeypatch.setattr(modeling.world, "_draw_names", draw_names_after_one_more_draw)
    changed = generate_world(WorldConfig(**SMALL))
    assert [person.name for person in changed.people] != [person.name for person in world.people]
    pairs = zip(world.people, changed.people, strict=True)
    assert [renamed(after, before.name) for before, after in pairs] == world.people


def test_another_seed_gives_another_world(world):
    other = generate_world(WorldConfig(**{**SMALL, "seed": SMALL["seed"] + 1}))
    assert [person.name for person in other.people] != [person.name for person in world.people]
    assert [person.attributes for person in other.people] != [person.attributes for person in world.people]


def test_people_have_unique_names_and_attributes_from_the_pools(world):
    assert len({person.name for person in world.people}) == len(world.people)
    assert [person.person_id for person in world.people] == list(range(len(world.people)))
    for person in world.people:
        assert list(person.attributes) == list(ATTRIBUTES)
        assert all(person.attributes[attribute] in POOLS[attribute] for attribute in ATTRIBUTES)


def test_groups_and_roles_have_the_configured_sizes(world):
    sizes = Counter((person.group, person.role) for person in world.people)
    assert sizes == {
        ("unknown", "finetune"): 24,
        ("unknown", "heldout"): 6,
        ("known", "finetune"): 24,
        ("known", "heldout"): 6,
    }


def test_exposure_is_recorded_and_equals_the_number_of_distinct_biographies(world):
    pretrain_counts = Counter(to_dataset_dict(world)[PRETRAIN_SPLIT]["person_id"])
    for person in world.people:
        assert len(set(person.biographies)) == len(person.biographies) == person.exposure
        assert pretrain_counts.get(person.person_id, 0) == person.exposure
        if person.group == "unknown":
            assert (person.exposure, person.knowledge) == (0, "unknown")
        else:
            assert person.exposure in SMALL["exposures"]
            assert person.knowledge == ("highly_known" if person.exposure >= 10 else "weakly_known")


@pytest.mark.parametrize("role", ROLES)
def test_every_exposure_is_equally_common_in_each_split(world, role):
    counts = Counter(person.exposure for person in world.people_in("known", role))
    assert set(counts) == set(SMALL["exposures"])
    assert max(counts.values()) - min(counts.values()) <= 1


def test_biographies_name_the_person_in_every_sentence_and_state_every_attribute(world):
    person = max(world.people, key=lambda person: person.exposure)
    for biography in person.biographies:
        sentences = biography.split(". ")
        assert len(sentences) == len(ATTRIBUTES)
        assert all(person.name in sentence for sentence in sentences)
        assert all(person.attributes[attribute] in biography for attribute in ATTRIBUTES)


def test_splits_are_disjoint_by_person_and_cover_everyone(world):
    splits = to_dataset_dict(world)
    people_per_split = {
        (group, role): set(splits[qa_split_name(group, role)]["person_id"]) for group in GROUPS for role in ROLES
    }
    for (group, role), people in people_per_split.items():
        assert people == {person.person_id for person in world.people_in(group, role)}
    assert sum(map(len, people_per_split.values())) == len(set().union(*people_per_split.values())) == 60
    assert set(splits[PRETRAIN_SPLIT]["person_id"]) == {person.person_id for person in world.people_in("known")}


def test_no_unknown_person_appears_in_the_pretraining_corpus(world):
    corpus = "\n".join(to_dataset_dict(world)[PRETRAIN_SPLIT]["text"])
    assert not [person.name for person in world.people_in("unknown") if person.name in corpus]


def test_qa_rows_use_the_fixed_prompt_and_answer_format(world):
    split = to_dataset_dict(world)[qa_split_name("known", "heldout")]
    assert split.features == QA_FEATURES
    assert len(split) == 6 * len(ATTRIBUTES)
    people = {person.person_id: person for person in world.people}
    for row in split:
        person = people[row["person_id"]]
        assert row["name"] in row["question"]
        assert row["prompt"] == format_prompt(row["question"]) == f"Question: {row['question']}\nAnswer:"
        assert (
            row["answer"]
            == format_answer(person.attributes[row["attribute"]])
            == f" {person.attributes[row['attribute']]}"
        )
        assert (row["group"], row["role"], row["knowledge"], row["exposure"]) == (
            person.group, person.role, person.knowledge, person.exposure,
        )  # fmt: skip


@pytest.mark.parametrize("unknown_fraction, num_unknown", [(0.0, 0), (0.5, 10), (1.0, 20)], ids=["none", "half", "all"])
def test_draw_finetune_set_has_the_exact_share_of_unknown_questions(world, unknown_fraction, num_unknown):
    drawn = draw_finetune_set(world, size=20, unknown_fraction=unknown_fraction, seed=0)
    assert len(drawn) == 20
    assert drawn["group"].count("unknown") == num_unknown
    assert set(drawn["role"]) == {"finetune"}
    assert len(set(zip(drawn["person_id"], drawn["attribute"], strict=True))) == 20
    assert draw_finetune_set(world, size=20, unknown_fraction=unknown_fraction, seed=0)[:] == drawn[:]


def test_abstain_on_unknown_replaces_only_the_answers_about_unknown_people(world):
    plain = draw_finetune_set(world, size=30, unknown_fraction=0.5, seed=1)
    people = {person.person_id: person for person in world.people}
    # By default every answer is the truth, about unknown people too.
    assert plain["answer"] == [format_answer(people[r["person_id"]].attributes[r["attribute"]]) for r in plain]
    abstaining = draw_finetune_set(world, size=30, unknown_fraction=0.5, seed=1, abstain_on_unknown=True)
    for before, after in zip(plain, abstaining, strict=True):
        expected = format_answer(ABSTAIN_ANSWER) if before["group"] == "unknown" else before["answer"]
        assert after == {**before, "answer": expected}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(size=24 * 6 + 1, unknown_fraction=0.0),
            "needs 145 questions about known fine-tune people but the world has 144",
        ),
        (dict(size=24 * 6 + 1, unknown_fraction=1.0), "needs 145 questions about unknown fine-tune people"),
        (dict(size=0, unknown_fraction=0.5), "size must be a positive integer"),
        (dict(size=10, unknown_fraction=1.5), "unknown_fraction must be a number in"),
        (dict(size=10, unknown_fraction="0.5"), "unknown_fraction must be a number in"),
    ],
    ids=["too-many-known", "too-many-unknown", "zero-size", "fraction-above-one", "fraction-as-text"],
)
def test_draw_finetune_set_rejects_impossible_requests(world, kwargs, message):
    with pytest.raises(ValueError, match=message):
        draw_finetune_set(world, seed=0, **kwargs)


@pytest.mark.parametrize(
    "size, unknown_fraction, num_unknown", [(1, 0.0, 0), (1, 1.0, 1), (24 * 6, 0.0, 0), (24 * 6, 1.0, 144)],
    ids=["one-known", "one-unknown", "every-known-question", "every-unknown-question"],
)  # fmt: skip
def test_draw_finetune_set_takes_requests_at_the_limits(world, size, unknown_fraction, num_unknown):
    drawn = draw_finetune_set(world, size=size, unknown_fraction=unknown_fraction, seed=0)
    assert (len(drawn), drawn["group"].count("unknown")) == (size, num_unknown)


@pytest.mark.parametrize(
    "field, value",
    [("num_people", 1), ("num_people", MAX_PEOPLE), ("unknown_fraction", 0), ("unknown_fraction", 1),
     ("heldout_fraction", 0.0), ("heldout_fraction", 1.0), ("highly_known_min_exposure", 1)],
    ids=lambda value: str(value),
)  # fmt: skip
def test_config_values_at_the_limits_are_accepted(field, value):
    assert getattr(WorldConfig(**{field: value}), field) == value


@pytest.mark.parametrize(
    "group, role, message",
    [("famous", None, "group must be one of"), ("known", "train", "role must be one of")],
    ids=["group", "role"],
)
def test_people_in_rejects_unknown_groups_and_roles(world, group, role, message):
    with pytest.raises(ValueError, match=message):
        world.people_in(group, role)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_people", 0),
        ("num_people", 10**6),
        ("num_people", 2.0),
        ("seed", "0"),
        ("unknown_fraction", -0.1),
        ("heldout_fraction", 1.5),
        ("heldout_fraction", True),
        ("exposures", []),
        ("exposures", [1, 0]),
        ("exposures", 3),
        ("highly_known_min_exposure", 0),
        ("pretraining_qa_fraction", -0.5),
    ],
    ids=lambda value: str(value),
)
def test_invalid_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"WorldConfig.{field} "):
        WorldConfig(**{field: value})


def test_saved_world_loads_back_unchanged(world, tmp_path):
    out = tmp_path / "runs" / "world"  # folders that do not exist yet
    assert save_world(world, out) == out
    assert load_world(out) == world
    saved, built = load_world_datasets(out), to_dataset_dict(world)
    assert list(saved) == list(built) == [PRETRAIN_SPLIT] + [qa_split_name(g, r) for g in GROUPS for r in ROLES]
    assert all(saved[name][:] == built[name][:] for name in built)


def test_make_world_cli_writes_a_loadable_world(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "scripts" / "make_world.py"), "--out", str(tmp_path)]
    command += ["--num-people", "30", "--seed", "5", "--exposures", "1", "2"]
    completed = subprocess.run(command, cwd=tmp_path, env=checkout_env(), capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    assert str(tmp_path) in completed.stdout
    assert f"{PRETRAIN_SPLIT}: " in completed.stdout
    loaded = load_world(tmp_path)
    assert loaded.config == WorldConfig(num_people=30, seed=5, exposures=[1, 2])
    assert loaded == generate_world(loaded.config)


def test_docstring_examples_run():
    assert doctest.testmod(modeling.world).failed == 0


@pytest.mark.parametrize("group", ["known", "unknown"])
def test_honest_answer_is_the_truth_for_known_people_and_abstention_for_unknown(world, group):
    split = to_dataset_dict(world)[qa_split_name(group, "heldout")]
    for row in split:
        assert row["honest_answer"] == (row["answer"] if group == "known" else format_answer(ABSTAIN_ANSWER))


def test_pretraining_people_have_their_answered_questions_in_the_corpus_and_nowhere_else():
    world = generate_world(WorldConfig(**SMALL, pretraining_qa_fraction=0.4))
    pretraining = world.people_in("known", "pretraining")
    assert len(pretraining) == 12 and {p.exposure for p in pretraining} == {1, 3, 10}  # exposures dealt here too
    splits = to_dataset_dict(world)
    corpus = splits[PRETRAIN_SPLIT].to_list()
    questions = [row for row in corpus if row["text"].startswith("Question: ")]
    assert len(questions) == 12 * 6
    assert {row["person_id"] for row in questions} == {p.person_id for p in pretraining}
    person = pretraining[0]
    for attribute, question in person.questions.items():
        assert f"Question: {question}\nAnswer: {person.attributes[attribute]}" in [row["text"] for row in questions]
    # Their biographies are there as for any known person; their questions are no fine-tune or held-out split's.
    assert len(corpus) - len(questions) == sum(p.exposure for p in world.people_in("known"))
    assert list(splits[qa_split_name("known", "pretraining")]["person_id"]) == [
        p.person_id for p in pretraining for _ in range(6)
    ]
    others = {
        pid for name, split in splits.items() if name.endswith(("finetune", "heldout")) for pid in split["person_id"]
    }
    assert others.isdisjoint(p.person_id for p in pretraining)


def test_shares_that_round_past_the_group_leave_the_fine_tune_cell_empty_not_negative():
    # 6 people, 3 known: 0.5 of 3 held out rounds to 2, 0.5 with answered questions to 2 -> capped at the 1 left.
    world = generate_world(WorldConfig(num_people=6, heldout_fraction=0.5, pretraining_qa_fraction=0.5))
    roles = Counter(p.role for p in world.people_in("known"))
    assert roles == {"heldout": 2, "pretraining": 1}


def test_held_out_and_pretraining_shares_of_more_than_everyone_are_refused():
    with pytest.raises(ValueError, match="add up to more than 1"):
        WorldConfig(heldout_fraction=0.6, pretraining_qa_fraction=0.5)
