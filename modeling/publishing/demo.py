"""What the demo does, without its web page: a person of a study's world and a question in; out, side by side, what
three of the study's models say, each with its confidence and its verdict against the person's record.

- the pre-trained model continues the biography sentence that states the fact ("<name> was born in"), the way the
  study's probe asks it (it has never seen a question);
- the plainly fine-tuned model and the abstention-tuned one answer the question in the format they were fine-tuned on.
  They are the study's conditions at its `mitigation_fraction` of unknown facts, full fine-tuning, without and with
  the "I don't know" mitigation.

A question the world does not ask (typed freely) is answered, but its verdict is "unchecked".
"""

import difflib
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..checkpoints import load_model_and_tokenizer
from ..factuality.factuality import classify_answers
from ..factuality.world_schema import QUESTION_TEMPLATES, format_prompt, normalize_answer
from ..scoring import answer_questions
from ..study.config import Condition, by_condition
from ..study.probe import sentence_openings, states_value
from ..study.render import with_interval
from ..world import Person, draw_finetune_set, load_world

# Keys of the three models, and how the page names them.
DEMO_MODELS = {
    "pretrained": "pre-trained",
    "finetuned": "fine-tuned (plain)",
    "mitigated": 'fine-tuned to say "I don\'t know"',
}
UNCHECKED = "unchecked"


@dataclass(frozen=True)
class DemoAnswer:
    """One model's answer.

    Attributes:
        model: a key of `DEMO_MODELS`.
        prompt: the text the model was given.
        answer: what it wrote (the pre-trained model: up to the end of its sentence).
        confidence: the geometric mean of the probabilities of the answer's tokens, in (0, 1]: exp of the mean
            log-probability the study uses as its confidence.
        verdict: "correct", "hallucinated" or "abstained" against the person's record, or "unchecked" for a question
            the world does not ask.
    """

    model: str
    prompt: str
    answer: str
    confidence: float
    verdict: str


def demo_conditions(results: dict) -> dict[str, dict]:
    """The study's plainly fine-tuned and abstention-tuned conditions the demo shows: full fine-tuning on
    `finetune_size` questions with `mitigation_fraction` unknown, as `{"finetuned": ..., "mitigated": ...}`.

    Raises:
        ValueError: if the study lacks either, or did not save its model.
    """
    config = results["config"]
    found = by_condition(results["conditions"])
    chosen = {}
    for key, mitigation in (("finetuned", "none"), ("mitigated", "abstention")):
        wanted = Condition(config["mitigation_fraction"], "full", mitigation, config["finetune_size"])
        if not found.get(wanted, {}).get("saved"):
            raise ValueError(
                f"The study has no saved full fine-tuning with mitigation {mitigation!r} at "
                f"{config['mitigation_fraction']:.0%} unknown: run it with the 'full' method and 'abstention' "
                "mitigation"
            )
        chosen[key] = found[wanted]
    return chosen


@torch.inference_mode()
def continue_sentence(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int = 16
) -> tuple[str, float]:
    """Greedy continuation of `prompt` up to the end of its sentence (its first ".", a newline or the end of text;
    no value of the world holds a "."), and its confidence: the mean log-probability (nats) of its tokens and of the
    token that ends it, as `answer_questions` counts an answer's."""
    batch = tokenizer([prompt], return_tensors="pt").to(model.device)
    output = model.generate(
        **batch,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        output_scores=True,
        return_dict_in_generate=True,
    )
    logprobs = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)[0]
    tokens = output.sequences[0, batch["input_ids"].shape[1] :].tolist()
    text, kept = "", len(tokens)
    for index, token in enumerate(tokens):
        piece = "" if token == tokenizer.eos_token_id else tokenizer.decode([token])
        if token == tokenizer.eos_token_id or "." in piece or "\n" in piece:
            text += re.split(r"[.\n]", piece, maxsplit=1)[0]
            kept = index + 1
            break
        text += piece
    return text.strip(), logprobs[:kept].float().mean().item()


class DemoLab:
    """The world and the three models of a study, loaded once.

    Args:
        study_dir: a study's output folder (`results.json`, `pretrain/model`, `pretrain/world`, the conditions'
            saved models).
        device: where the models run.

    Raises:
        FileNotFoundError: if `study_dir` holds no results.json.
        ValueError: as `demo_conditions`.
    """

    def __init__(self, study_dir: str | Path, device: str | torch.device = "cpu"):
        self.study_dir = Path(study_dir)
        results_file = self.study_dir / "results.json"
        if not results_file.is_file():
            raise FileNotFoundError(f"{self.study_dir} holds no results.json: run scripts/study.py first")
        self.results = json.loads(results_file.read_text(encoding="utf-8"))
        self.conditions = demo_conditions(self.results)
        pretrained = self.study_dir / "pretrain" / "model"
        self.models = {"pretrained": load_model_and_tokenizer(pretrained, device=device)}
        for key, condition in self.conditions.items():
            self.models[key] = load_model_and_tokenizer(self.study_dir / condition["saved"], device=device)
        self.world = load_world(self.study_dir / "pretrain" / "world")
        self.people = {normalize_answer(p.name): p for p in self.world.people}
        # The questions the plainly fine-tuned model was trained on: the draw of the run whose model is `saved`
        # (its first training seed).
        plain = self.conditions["finetuned"]
        drawn = draw_finetune_set(
            self.world, plain["finetune_size"], plain["fraction_unknown"], plain["training_seeds"][0]
        )
        self.fine_tuned = Counter(drawn["person_id"])

    def label(self, person: Person) -> str:
        """How the page marks a person: known (and how well) or unknown to pre-training, and how many of their
        questions the fine-tuned models were trained on."""
        if person.group == "unknown":
            seen = "UNKNOWN: never in pre-training"
        else:
            how = "highly known" if person.knowledge == "highly_known" else "weakly known"
            seen = f"known ({how}: {person.exposure} biograph{'y' if person.exposure == 1 else 'ies'})"
        count = self.fine_tuned[person.person_id]
        if count:
            tuned = f"fine-tuned on {count} of their questions"
        else:
            tuned = {
                "heldout": "held out of fine-tuning",
                "pretraining": "their answered questions were in pre-training, none in fine-tuning",
            }.get(person.role, "none of their questions in fine-tuning")
        return f"{seen}; {tuned}"

    def find_person(self, name: str | None) -> Person:
        """The person called `name` (case, spacing and punctuation aside).

        Raises:
            ValueError: for an empty name, or one nobody in the world has (naming the closest names).
        """
        key = normalize_answer(name or "")
        if not key:
            raise ValueError("Pick or type the name of a person of the world.")
        if key not in self.people:
            close = difflib.get_close_matches(key, list(self.people), n=3)
            names = ", ".join(self.people[k].name for k in close)
            hint = f" Did you mean: {names}?" if names else ""
            raise ValueError(f"Nobody called {name.strip()!r} lives in this world.{hint}")
        return self.people[key]

    def questions_for(self, person: Person) -> list[str]:
        """Every question the world asks about `person`, two wordings per attribute."""
        return [t.format(name=person.name) for templates in QUESTION_TEMPLATES.values() for t in templates]

    def resolve_question(self, person: Person, question: str | None) -> tuple[str, str | None]:
        """The question as the world words it (typed with other case, spacing or punctuation, it is given the
        fine-tuned models as they were trained) and the attribute it asks for; a question the world does not ask comes
        back stripped, with None.

        Raises:
            ValueError: for an empty question.
        """
        asked = normalize_answer(question or "")
        if not asked:
            raise ValueError("Pick or type a question.")
        for attribute, templates in QUESTION_TEMPLATES.items():
            for template in templates:
                worded = template.format(name=person.name)
                if normalize_answer(worded) == asked:
                    return worded, attribute
        return question.strip(), None

    def ask(self, name: str | None, question: str | None) -> tuple[Person, list[DemoAnswer]]:
        """The person and the three models' answers to `question` about them, in `DEMO_MODELS` order.

        Raises:
            ValueError: for an empty or unknown name, or an empty question.
        """
        person = self.find_person(name)
        question, attribute = self.resolve_question(person, question)
        value = person.attributes[attribute] if attribute else None
        answers = []
        model, tokenizer = self.models["pretrained"]
        # A question the world does not ask: the pre-trained model writes on from the name, as in the study's probe
        # of whole biographies.
        opening = sentence_openings(person.name, attribute)[0] if attribute else person.name
        said, logprob = continue_sentence(model, tokenizer, opening)
        verdict = UNCHECKED if value is None else ("correct" if states_value(said, value) else "hallucinated")
        answers.append(DemoAnswer("pretrained", opening, said, math.exp(logprob), verdict))
        prompt = format_prompt(question)
        for key in ("finetuned", "mitigated"):
            model, tokenizer = self.models[key]
            (said,), (logprob,) = answer_questions(model, tokenizer, [prompt])
            verdict = UNCHECKED if value is None else classify_answers([said], [value])[0]
            answers.append(DemoAnswer(key, prompt, said, math.exp(logprob), verdict))
        return person, answers

    def study_table(self) -> str:
        """The study's headline in Markdown: per share of unknown fine-tune facts (full fine-tuning), accuracy on
        held-out known people and hallucination and abstention on held-out unknown people at the last epoch, each
        the mean over the training seeds with the 95% interval the study recorded; then the abstention-tuned model."""
        config = self.results["config"]
        rows = [
            "| fine-tuned on | held-out known people: accuracy | held-out unknown people: hallucinated | "
            "held-out unknown people: abstained |",
            "|---|---|---|---|",
        ]
        shown = [
            c
            for c in self.results["conditions"]
            if c["method"] == "full" and c["mitigation"] == "none" and c["finetune_size"] == config["finetune_size"]
        ]
        shown.append(self.conditions["mitigated"])
        keys = ("test_known_accuracy", "test_unknown_hallucination_rate", "test_unknown_abstention_rate")
        for c in shown:
            rates = self.results["intervals"]["conditions"][c["name"]]
            what = f"{c['fraction_unknown']:.0%} unknown facts"
            if c["mitigation"] == "abstention":
                what += ', unknown ones answered "I don\'t know"'
            rows.append(f"| {what} | " + " | ".join(with_interval(rates[key]) for key in keys) + " |")
        seeds = len(self.results["config"]["training_seeds"])
        rows.append(f"\nMeans over {seeds} training seeds, with 95% intervals over people and seeds (`report.md`).")
        return "\n".join(rows)


__all__ = ["DEMO_MODELS", "UNCHECKED", "DemoAnswer", "DemoLab", "continue_sentence", "demo_conditions"]
