"""What a pre-trained model knows, fact by fact, before any fine-tuning: a SliCK-style probe (Gekhman et al., 2024,
"Does Fine-Tuning LLMs on New Knowledge Encourage Hallucinations?", section 3).

SliCK asks a model each question with several few-shot exemplars, greedily and sampled, and sorts each fact by how
often the answer is right. A pre-trained model that has never seen a question is prompted here the way it learned the
facts: with the opening of each biography sentence of the attribute ("<name> was born in"), one greedy continuation
per opening (four paraphrases per attribute) and `num_samples` sampled ones per opening. Each (person, attribute):

- `highly_known`: every greedy continuation states the value;
- `maybe_known`: some, not all, greedy continuations do;
- `weakly_known`: no greedy continuation does, some sampled one does;
- `unknown`: none does.
"""

from collections import Counter

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..factuality.world_schema import BIOGRAPHY_TEMPLATES, normalize_answer
from ..scoring import continue_prompts, value_token_budget
from ..world import Person

PROBE_CATEGORIES = ("highly_known", "maybe_known", "weakly_known", "unknown")


def sentence_openings(name: str, attribute: str) -> list[str]:
    """The text before the value in each biography template of `attribute`, e.g. "Ada Lovelace was born in"."""
    return [template.split("{value}")[0].rstrip().format(name=name) for template in BIOGRAPHY_TEMPLATES[attribute]]


def states_value(continuation: str, value: str) -> bool:
    """Whether a continuation starts with the value (compared after `normalize_answer`, up to a word boundary)."""
    said, expected = normalize_answer(continuation), normalize_answer(value)
    return said == expected or said.startswith(expected + " ")


def probe_category(greedy: list[bool], sampled: list[bool]) -> str:
    """The SliCK category from which greedy and sampled continuations state the value."""
    if greedy and all(greedy):
        return "highly_known"
    if any(greedy):
        return "maybe_known"
    return "weakly_known" if any(sampled) else "unknown"


@torch.inference_mode()
def probe_knowledge(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    people: list[Person],
    num_samples: int = 4,
    temperature: float = 0.7,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> dict:
    """Probe every attribute of `people`.

    Returns `{"facts": [{"person_id", "attribute", "group", "knowledge", "category", "greedy_correct",
    "sampled_correct"}, ...], "agreement": {designed knowledge: {probe category: count}}}`, where `knowledge` is the
    category the world designed (from exposure) and `category` the one measured here. Continuations are
    `max_new_tokens` long, by default `value_token_budget` of the values of `people`.
    """
    facts, prompts = _facts_and_prompts(people)
    if max_new_tokens is None:
        max_new_tokens = value_token_budget(tokenizer, [fact["value"] for fact in facts])
    greedy = continue_prompts(model, tokenizer, prompts, max_new_tokens, batch_size, progress="probe: greedy")
    sampled = []
    if num_samples:
        torch.manual_seed(seed)
        sampled = continue_prompts(
            model,
            tokenizer,
            prompts,
            max_new_tokens,
            batch_size,
            progress="probe: sampled",
            do_sample=True,
            temperature=temperature,
            top_k=0,
            num_return_sequences=num_samples,
        )
    records = _fact_records(facts, greedy, sampled, num_samples)
    agreement = {}
    for record in records:
        agreement.setdefault(record["knowledge"], Counter())[record["category"]] += 1
    return {
        "facts": records,
        "agreement": {
            knowledge: {category: counts[category] for category in PROBE_CATEGORIES}
            for knowledge, counts in agreement.items()
        },
    }


def _facts_and_prompts(people: list[Person]) -> tuple[list[dict], list[str]]:
    """Every fact of `people` (its person, attribute, value and number of openings) and the openings, fact by fact."""
    facts, prompts = [], []
    for person in people:
        for attribute, value in person.attributes.items():
            openings = sentence_openings(person.name, attribute)
            facts.append({"person": person, "attribute": attribute, "value": value, "openings": len(openings)})
            prompts.extend(openings)
    return facts, prompts


def _fact_records(facts: list[dict], greedy: list[str], sampled: list[str], num_samples: int) -> list[dict]:
    """One record per fact: how many of its greedy and sampled continuations state its value, and its category.

    `greedy` holds one continuation per opening, in the order of `facts`; `sampled` `num_samples` per opening.
    """
    records, start = [], 0
    for fact in facts:
        end = start + fact["openings"]
        greedy_correct = [states_value(text, fact["value"]) for text in greedy[start:end]]
        sampled_correct = [
            states_value(text, fact["value"]) for text in sampled[start * num_samples : end * num_samples]
        ]
        start = end
        person = fact["person"]
        records.append(
            {
                "person_id": person.person_id,
                "attribute": fact["attribute"],
                "group": person.group,
                "knowledge": person.knowledge,
                "category": probe_category(greedy_correct, sampled_correct),
                "greedy_correct": sum(greedy_correct),
                "sampled_correct": sum(sampled_correct),
            }
        )
    return records


__all__ = ["PROBE_CATEGORIES", "probe_category", "probe_knowledge", "sentence_openings", "states_value"]
