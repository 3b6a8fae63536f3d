"""Where the hallucinated answers come from, answer by answer.

A wrong answer to "where was X born?" can be a value the fine-tune set taught: its most frequent answer to that
attribute, taught at least twice (the "hedged default" that Kang et al., 2024, "Unfamiliar Finetuning Examples
Control How Language Models Hallucinate", find models fall back on), or any other value it taught (a "borrowed"
answer, as Ren & Sutherland, 2025, describe after SFT); or another person's value of that attribute in the world that
fine-tuning did not teach; or nothing anyone has. The kinds are nested, and each answer gets the first that fits, in
the order of `SOURCES`.

Beside each observed share stands what chance alone would give: the share of the world's other people (all but the
one asked about, and those who share their value) whose value would have been of that kind. A model that picked a
wrong value at random by how often values occur would land there that often.
"""

from collections import Counter

import pandas as pd

from ..factuality.world_schema import ABSTAIN_ANSWER, normalize_answer
from ..world import World

SOURCES = ("hedged_default", "borrowed", "other_person", "none")


def taught_values(finetune_rows: list[dict]) -> dict[str, Counter]:
    """Attribute -> how often each (normalised) value is a target of the fine-tune set (rows with `attribute` and
    `answer`, the training target); "I don't know" targets teach no value and are left out."""
    taught: dict[str, Counter] = {}
    abstain = normalize_answer(ABSTAIN_ANSWER)
    for row in finetune_rows:
        value = normalize_answer(row["answer"])
        if value != abstain:
            taught.setdefault(row["attribute"], Counter())[value] += 1
    return taught


def world_values(world: World) -> dict[str, Counter]:
    """Attribute -> how many people of `world` have each (normalised) value."""
    values: dict[str, Counter] = {}
    for person in world.people:
        for attribute, value in person.attributes.items():
            values.setdefault(attribute, Counter())[normalize_answer(value)] += 1
    return values


def _source(answer: str, defaults: set[str], taught: Counter, world: Counter) -> str:
    if answer in defaults:
        return "hedged_default"
    if answer in taught:
        return "borrowed"
    return "other_person" if answer in world else "none"


def error_sources(records: list[dict], taught: dict[str, Counter], values: dict[str, Counter]) -> list[dict]:
    """For each of `records` (`records.evaluation_records` rows of one run, `taught` its fine-tune set's
    `taught_values`, `values` the world's `world_values`): its `error_source` (a name of `SOURCES`) and the chance
    shares `chance_hedged_default` and `chance_borrowed`, for a hallucinated answer where the reference is a value
    of the world (not an abstention target); None otherwise. Returns the columns, one dict per record."""
    chances: dict[tuple[str, str], tuple[float, float] | None] = {}
    columns = []
    for record in records:
        attribute, truth = record["attribute"], normalize_answer(record["reference"])
        world, counts = values.get(attribute, Counter()), taught.get(attribute, Counter())
        most = max(counts.values(), default=0)
        # A default is a value taught more often than once, and more often than any other (ties all count).
        defaults = {value for value, count in counts.items() if count == most} if most > 1 else set()
        if (attribute, truth) not in chances:
            others = world.total() - world[truth]  # the other people's values, all but those equal to the truth
            kinds = Counter()
            for value, count in world.items():
                if value != truth:
                    kinds[_source(value, defaults, counts, world)] += count
            chances[(attribute, truth)] = (
                (kinds["hedged_default"] / others, kinds["borrowed"] / others) if truth in world and others else None
            )
        chance = chances[(attribute, truth)]
        if record["verdict"] != "hallucinated" or chance is None:
            columns.append({"error_source": None, "chance_hedged_default": None, "chance_borrowed": None})
            continue
        source = _source(normalize_answer(record["answer"]), defaults, counts, world)
        columns.append({"error_source": source, "chance_hedged_default": chance[0], "chance_borrowed": chance[1]})
    return columns


def source_shares(rows: pd.DataFrame) -> dict:
    """Of the hallucinated answers among `rows` (records with `error_source`): how many, the share of each source,
    and the mean chance shares of the first two; shares None when there is none."""
    wrong = rows[rows["error_source"].notna()]
    count = len(wrong)
    return {
        "hallucinated": count,
        "shares": {source: (float((wrong["error_source"] == source).mean()) if count else None) for source in SOURCES},
        "chance": {
            source: (float(wrong[f"chance_{source}"].mean()) if count else None)
            for source in ("hedged_default", "borrowed")
        },
    }


def sources_by_epoch(rows: pd.DataFrame) -> list[dict]:
    """`source_shares` of one condition's records (all its seeds pooled) at each epoch, overall and by exposure."""
    out = []
    for epoch, at_epoch in rows.groupby("epoch", sort=True):
        by_exposure = {
            str(exposure): source_shares(group) for exposure, group in at_epoch.groupby("exposure", sort=True)
        }
        out.append({"epoch": int(epoch), **source_shares(at_epoch), "by_exposure": by_exposure})
    return out


__all__ = ["SOURCES", "error_sources", "source_shares", "sources_by_epoch", "taught_values", "world_values"]
