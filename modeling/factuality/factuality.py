"""Factuality metric: right, hallucinated and abstained answers, and supported and contradicted biography claims.

Two configs:

- "qa" (the default): one short answer per question. An answer is *abstained* if, after `normalize_answer`
  (lower case, no punctuation, collapsed whitespace), it equals an abstain phrase or starts with one followed by a
  space, so "I don't know." and "I don't know, sorry" both abstain. Abstention is checked first. Otherwise it is
  *correct* if it equals the normalised reference and *hallucinated* if not; an empty answer is hallucinated,
  because only an explicit abstain phrase earns the credit of abstaining.

  A reference may itself abstain: the target of abstention tuning (R-Tuning) for a question the model cannot know
  is " I don't know". The verdict describes what the answer states, so an abstaining answer to it is *abstained*,
  never *correct* (it states no fact), and any other answer is *hallucinated* (it states a fact the reference says
  is not known). How well answers fit such targets, as in the training accuracy of abstention tuning, is
  `exact_match`: correct answers plus abstentions where the reference abstains.
- "biography": free text about one person per prediction, checked against that person's record. The text's claims
  are found with `extract_claims` from `world_schema.py`: every biography template of the world is a regular
  expression, and a match counts when the name it contains is the record's name. A claim is one attribute the text
  states. It is *supported* when every value the text gives for the attribute equals the record's value, and
  *contradicted* otherwise: a text that gives two different values for one attribute contradicts the record even
  if one of them is right, since the reader cannot tell which to believe. Sentences about other people and
  sentences that follow no template are ignored.
"""

import math
import numbers
from collections.abc import Mapping, Sequence

import datasets
import evaluate
from sklearn.metrics import roc_auc_score

from .world_schema import ATTRIBUTES, DEFAULT_ABSTAIN_PHRASES, RECORD_FIELDS, extract_claims, normalize_answer

_DESCRIPTION = """
Measures the factuality of a language model about a synthetic world in which every fact is known.

The "qa" config (the default) sorts each answer into correct, hallucinated or abstained after normalising case,
punctuation and whitespace, and can rank confidences by how well they separate correct from hallucinated answers
(AUROC). The "biography" config extracts the claims a generated biography makes about its subject with the world's
templates and scores them against the subject's record, in the spirit of FActScore: the share of stated claims that
are supported, the share that are contradicted, and how many of the record's attributes the text covers.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): Generated texts. "qa": the answer alone (the continuation of the prompt up to
        its first newline). "biography": a text about the person of the matching reference.
    references: "qa": `list` of `str`, the right answers. "biography": `list` of `dict`, each the record of one
        person with exactly the string fields "name", "birth_date", "birth_city", "university", "major",
        "employer" and "employer_city" (`Person.record()` in `modeling.world`).
    confidences (`list` of `float`, *optional*, "qa" only): One score per prediction, higher meaning more sure.
        Given to `compute()` only; adds "auroc" to the results.
    abstain_phrases (`list` of `str`, *optional*, "qa" only): Phrases that count as abstaining, replacing the
        default ["I don't know", "I do not know"]. An empty list means no answer abstains.
Returns:
    "qa":
        accuracy (`float`): correct answers / all answers. An abstaining reference is never answered correctly.
        hallucination_rate (`float`): hallucinated answers / all answers.
        abstention_rate (`float`): abstained answers / all answers. The three rates sum to 1.
        precision_answered (`float`): correct / (correct + hallucinated); 0.0 when every answer abstained.
        exact_match (`float`): answers that give what the reference gives / all answers: the correct ones, and the
            abstentions where the reference is itself an abstain phrase (how well a fine-tune set with " I don't
            know" targets is fitted). Equals accuracy when no reference abstains.
        auroc (`float`, with confidences only): probability that a correct answer has a higher confidence than a
            hallucinated one, ties counting 1/2, abstentions left out; NaN when there is no correct or no
            hallucinated answer.
        num_correct, num_hallucinated, num_abstained (`int`): the counts behind the rates.
    "biography", each rate averaged over predictions (macro average):
        claim_precision (`float`): supported claims / stated claims, over the predictions that state at least one
            claim; 0.0 when none does.
        contradiction_rate (`float`): contradicted claims / stated claims, over the same predictions; 0.0 when
            none states a claim. Where there are claims, claim_precision + contradiction_rate = 1.
        coverage (`float`): attributes stated / attributes in the record, over all predictions.
        no_claim_rate (`float`): share of predictions that state no claim about their person.
        num_claims, num_supported, num_contradicted, num_without_claims (`int`): counts over all predictions.
Examples:
    >>> factuality = evaluate.load("modeling/factuality")
    >>> results = factuality.compute(
    ...     predictions=["Paris", " london. ", "I don't know.", "Rome"],
    ...     references=["Paris", "London", "Berlin", "Madrid"],
    ...     confidences=[0.9, 0.6, 0.2, 0.7],
    ... )
    >>> print({name: round(value, 3) for name, value in results.items()})
    {'accuracy': 0.5, 'hallucination_rate': 0.25, 'abstention_rate': 0.25, 'precision_answered': 0.667, 'exact_match': 0.5, 'auroc': 0.5, 'num_correct': 2, 'num_hallucinated': 1, 'num_abstained': 1}

    >>> biography = evaluate.load("modeling/factuality", "biography")
    >>> record = {"name": "Ada Rose Chen", "birth_date": "March 3, 1960", "birth_city": "Oslo",
    ...           "university": "Yale University", "major": "Physics", "employer": "Acme Robotics",
    ...           "employer_city": "Lagos"}
    >>> text = "Ada Rose Chen was born in Oslo. Ada Rose Chen majored in Physics. Ada Rose Chen works for Granite Bank."
    >>> results = biography.compute(predictions=[text], references=[record])
    >>> print({name: round(value, 3) for name, value in results.items()})
    {'claim_precision': 0.667, 'contradiction_rate': 0.333, 'coverage': 0.5, 'no_claim_rate': 0.0, 'num_claims': 3, 'num_supported': 2, 'num_contradicted': 1, 'num_without_claims': 0}
"""

_CITATION = """
@article{allenzhu2023physics31,
  title={Physics of Language Models: Part 3.1, Knowledge Storage and Extraction},
  author={Allen-Zhu, Zeyuan and Li, Yuanzhi},
  journal={arXiv preprint arXiv:2309.14316},
  year={2023}
}
@inproceedings{gekhman2024finetuning,
  title={Does Fine-Tuning {LLMs} on New Knowledge Encourage Hallucinations?},
  author={Gekhman, Zorik and Yona, Gal and Aharoni, Roee and Eyal, Matan and Feder, Amir and Reichart, Roi and Herzig, Jonathan},
  booktitle={Proceedings of the 2024 Conference on Empirical Methods in Natural Language Processing},
  year={2024}
}
@inproceedings{zhang2024rtuning,
  title={{R-Tuning}: Instructing Large Language Models to Say `I Don't Know'},
  author={Zhang, Hanning and Diao, Shizhe and Lin, Yong and Fung, Yi and Lian, Qing and Wang, Xingyao and Chen, Yangyi and Ji, Heng and Zhang, Tong},
  booktitle={Proceedings of the 2024 Conference of the North American Chapter of the Association for Computational Linguistics},
  year={2024}
}
@inproceedings{min2023factscore,
  title={{FActScore}: Fine-grained Atomic Evaluation of Factual Precision in Long Form Text Generation},
  author={Min, Sewon and Krishna, Kalpesh and Lyu, Xinxi and Lewis, Mike and Yih, Wen-tau and Koh, Pang Wei and Iyyer, Mohit and Zettlemoyer, Luke and Hajishirzi, Hannaneh},
  booktitle={Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing},
  year={2023}
}
"""

CONFIG_NAMES = ("qa", "biography")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Factuality(evaluate.Metric):
    def _info(self):
        if self.config_name not in ("default", *CONFIG_NAMES):
            raise ValueError(f"factuality has the configs {CONFIG_NAMES}, got {self.config_name!r}")
        if self._is_biography:
            references = {field: datasets.Value("string") for field in RECORD_FIELDS}
        else:
            references = datasets.Value("string")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": references}),
            reference_urls=[
                "https://arxiv.org/abs/2309.14316",
                "https://arxiv.org/abs/2405.05904",
                "https://arxiv.org/abs/2305.14251",
                "https://arxiv.org/abs/2311.09677",
            ],
        )

    @property
    def _is_biography(self) -> bool:
        return self.config_name == "biography"

    # evaluate checks the type of the first input only and turns numbers into strings without a word, so the
    # inputs are checked here, before it stores them. (Each override needs a docstring: evaluate appends to it, and
    # mutmut's wrappers would drop it, hence the pragmas; the checks themselves are in _check_example.)
    def add_batch(self, *, predictions=None, references=None, **kwargs):  # pragma: no mutate block
        """Adds a batch of predictions and references after checking their types."""
        for label, column in (("predictions", predictions), ("references", references)):
            if isinstance(column, (str, Mapping)) or not hasattr(column, "__len__"):
                raise TypeError(f"{label} must be a list, got {type(column).__name__}: {column!r:.80}")
        if len(predictions) != len(references):
            raise ValueError(
                f"predictions and references must have the same length, "
                f"got {len(predictions)} predictions and {len(references)} references"
            )
        for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
            _check_example(prediction, reference, self._is_biography, index)
        super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):  # pragma: no mutate block
        """Adds one prediction and reference after checking their types."""
        _check_example(prediction, reference, self._is_biography)
        super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(self, predictions, references, confidences=None, abstain_phrases=None):
        if not predictions:
            raise ValueError("factuality needs at least one prediction, got none")
        if self._is_biography:
            if confidences is not None or abstain_phrases is not None:
                raise ValueError("confidences and abstain_phrases apply to the 'qa' config only, not 'biography'")
            return _biography_scores(predictions, references)
        return _qa_scores(predictions, references, confidences, abstain_phrases)


def _check_example(prediction, reference, biography: bool, index: int | None = None) -> None:
    # Name the input as the caller wrote it: `predictions[3]` from add_batch/compute, `prediction` from add.
    predicted, referenced = (
        ("prediction", "reference") if index is None else (f"predictions[{index}]", f"references[{index}]")
    )
    if not isinstance(prediction, str):
        raise TypeError(f"{predicted} must be a string, got {type(prediction).__name__}: {prediction!r:.80}")
    if not biography:
        if not isinstance(reference, str):
            raise TypeError(f"{referenced} must be a string, got {type(reference).__name__}: {reference!r:.80}")
        return
    if not isinstance(reference, Mapping):
        raise TypeError(
            f"{referenced} must be a dict with the fields {list(RECORD_FIELDS)}, got {type(reference).__name__}"
        )
    missing = [field for field in RECORD_FIELDS if field not in reference]
    unexpected = sorted(set(reference) - set(RECORD_FIELDS))
    if missing or unexpected:
        raise ValueError(
            f"{referenced} must have exactly the fields {list(RECORD_FIELDS)}: "
            f"missing {missing}, unexpected {unexpected}"
        )
    for field in RECORD_FIELDS:
        value = reference[field]
        if not isinstance(value, str) or not value.strip():
            raise TypeError(f"{referenced}[{field!r}] must be a non-empty string, got {value!r:.80}")


def classify_answers(
    predictions: Sequence[str], references: Sequence[str], abstain_phrases: Sequence[str] | None = None
) -> list[str]:
    """The verdict on each answer, "correct", "hallucinated" or "abstained", by the rules of the "qa" config: an
    answer that abstains is "abstained" whatever the reference; an answer to a reference that abstains is
    "hallucinated" otherwise; any other answer is "correct" when it equals the reference after `normalize_answer`.

    Args:
        predictions: the answers, one per question.
        references: the right answers, as many as `predictions`; " I don't know" (an abstain phrase) when the
            question cannot be known.
        abstain_phrases: the phrases that abstain; default `DEFAULT_ABSTAIN_PHRASES`.

    Raises:
        ValueError: if `predictions` and `references` differ in length, or a phrase is empty once normalised.
        TypeError: if `abstain_phrases` is not a list of strings.
    """
    return [verdict for verdict, _ in _judge(predictions, references, abstain_phrases)]


def _judge(predictions, references, abstain_phrases) -> list[tuple[str, bool]]:
    """(verdict, whether the answer gives what the reference gives) for each answer."""
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references must have the same length, "
            f"got {len(predictions)} predictions and {len(references)} references"
        )
    phrases = _normalized_abstain_phrases(abstain_phrases)

    def abstains(text: str) -> bool:
        return any(text == phrase or text.startswith(phrase + " ") for phrase in phrases)

    judged = []
    for prediction, reference in zip(predictions, references, strict=True):
        answer, target = normalize_answer(prediction), normalize_answer(reference)
        if abstains(answer):
            judged.append(("abstained", abstains(target)))
        elif abstains(target) or answer != target:
            judged.append(("hallucinated", False))
        else:
            judged.append(("correct", True))
    return judged


def _qa_scores(predictions, references, confidences, abstain_phrases) -> dict:
    if confidences is not None:
        _check_confidences(confidences, len(predictions))
    judged = _judge(predictions, references, abstain_phrases)
    outcomes = [verdict for verdict, _ in judged]

    total = len(outcomes)
    num_correct, num_hallucinated = outcomes.count("correct"), outcomes.count("hallucinated")
    num_abstained = outcomes.count("abstained")
    num_answered = num_correct + num_hallucinated
    results = {
        "accuracy": num_correct / total,
        "hallucination_rate": num_hallucinated / total,
        "abstention_rate": num_abstained / total,
        "precision_answered": num_correct / num_answered if num_answered else 0.0,
        "exact_match": sum(matches for _, matches in judged) / total,
    }
    if confidences is not None:
        # Abstentions state nothing, so they are neither right nor wrong for the detector.
        answered = [(o == "correct", float(c)) for c, o in zip(confidences, outcomes, strict=True) if o != "abstained"]
        results["auroc"] = _auroc([is_correct for is_correct, _ in answered], [c for _, c in answered])
    results.update(num_correct=num_correct, num_hallucinated=num_hallucinated, num_abstained=num_abstained)
    return results


def _normalized_abstain_phrases(abstain_phrases) -> list[str]:
    if abstain_phrases is None:
        abstain_phrases = DEFAULT_ABSTAIN_PHRASES
    if isinstance(abstain_phrases, str) or not hasattr(abstain_phrases, "__iter__"):
        raise TypeError(f"abstain_phrases must be a list of strings, got {type(abstain_phrases).__name__}")
    phrases = []
    for index, phrase in enumerate(abstain_phrases):
        if not isinstance(phrase, str):
            raise TypeError(f"abstain_phrases[{index}] must be a string, got {type(phrase).__name__}: {phrase!r:.80}")
        if not normalize_answer(phrase):
            # An empty phrase would be a prefix of every answer.
            raise ValueError(f"abstain_phrases[{index}] is empty once normalised: {phrase!r}")
        phrases.append(normalize_answer(phrase))
    return phrases


def _check_confidences(confidences, num_predictions: int) -> None:
    if isinstance(confidences, str) or not hasattr(confidences, "__len__"):
        raise TypeError(f"confidences must be a list of numbers, got {type(confidences).__name__}")
    if len(confidences) != num_predictions:
        raise ValueError(
            f"confidences must have one value per prediction, got {len(confidences)} confidences "
            f"for {num_predictions} predictions"
        )
    for index, confidence in enumerate(confidences):
        if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
            raise TypeError(
                f"confidences[{index}] must be a number, got {type(confidence).__name__}: {confidence!r:.80}"
            )
        if not math.isfinite(confidence):
            raise ValueError(f"confidences[{index}] must be finite, got {confidence!r}")


def _auroc(is_correct: list[bool], confidences: list[float]) -> float:
    """Area under the ROC curve of `confidences` as a detector of correct answers (scikit-learn's, which counts
    ties as 1/2, i.e. the Mann-Whitney U statistic / (n_correct * n_hallucinated)); NaN without both classes."""
    if all(is_correct) or not any(is_correct):
        return math.nan
    return float(roc_auc_score(is_correct, confidences))


def _biography_scores(predictions, references) -> dict:
    precisions, contradictions, coverages = [], [], []
    num_supported = num_contradicted = num_without_claims = 0
    for text, record in zip(predictions, references, strict=True):
        claims = extract_claims(text, record["name"])
        if not claims:
            num_without_claims += 1
            coverages.append(0.0)
            continue
        supported = sum(
            {normalize_answer(value) for value in values} == {normalize_answer(record[attribute])}
            for attribute, values in claims.items()
        )
        num_supported += supported
        num_contradicted += len(claims) - supported
        precisions.append(supported / len(claims))
        contradictions.append(1 - supported / len(claims))
        coverages.append(len(claims) / len(ATTRIBUTES))
    return {
        "claim_precision": _mean(precisions),
        "contradiction_rate": _mean(contradictions),
        "coverage": _mean(coverages),
        "no_claim_rate": num_without_claims / len(predictions),
        "num_claims": num_supported + num_contradicted,
        "num_supported": num_supported,
        "num_contradicted": num_contradicted,
        "num_without_claims": num_without_claims,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
