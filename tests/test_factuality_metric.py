"""The `factuality` metric, loaded with `evaluate.load` from its folder, and the claim extraction it relies on."""

import doctest
import math
import re
from pathlib import Path

import evaluate
import pytest

from modeling.factuality import world_schema
from modeling.factuality.factuality import classify_answers
from modeling.factuality.world_schema import (
    ATTRIBUTES,
    BIOGRAPHY_TEMPLATES,
    FIRST_NAMES,
    LAST_NAMES,
    MIDDLE_NAMES,
    POOLS,
    extract_claims,
    parse_answer,
)
from modeling.world import WorldConfig, generate_world

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC_DIR = REPO_ROOT / "modeling" / "factuality"

NAME = "Ada Rose Chen"
RECORD = {
    "name": NAME,
    "birth_date": "March 3, 1960",
    "birth_city": "Oslo",
    "university": "Yale University",
    "major": "Physics",
    "employer": "Acme Robotics",
    "employer_city": "Lagos",
}


def sentence(attribute: str, value: str, template: int = 0, name: str = NAME) -> str:
    return BIOGRAPHY_TEMPLATES[attribute][template].format(name=name, value=value)


# keep_in_memory: the error cases abort `compute` halfway, which would leave cache files on disk.
@pytest.fixture(scope="module")
def qa():
    return evaluate.load(str(METRIC_DIR), keep_in_memory=True)


@pytest.fixture(scope="module")
def biography():
    return evaluate.load(str(METRIC_DIR), "biography", keep_in_memory=True)


# --- QA -------------------------------------------------------------------------------------------------------------


def qa_result(correct: int, hallucinated: int, abstained: int, exact_match: float | None = None) -> dict:
    """The full "qa" result for counts worked out by hand."""
    total = correct + hallucinated + abstained
    return dict(
        accuracy=correct / total,
        hallucination_rate=hallucinated / total,
        abstention_rate=abstained / total,
        precision_answered=correct / (correct + hallucinated) if correct + hallucinated else 0.0,
        exact_match=correct / total if exact_match is None else exact_match,
        num_correct=correct,
        num_hallucinated=hallucinated,
        num_abstained=abstained,
    )


# Each case lists the verdicts by hand, in order; the expected result is the whole dict, not a few of its keys.
QA_CASES = {
    "all-correct": (["Paris", "London"], ["Paris", "London"], ["correct", "correct"], qa_result(2, 0, 0)),
    "correct-hallucinated-abstained": (
        ["Paris", "Rome", "I don't know", "london", "i do not know."],
        ["Paris", "Madrid", "Berlin", "London", "Oslo"],
        ["correct", "hallucinated", "abstained", "correct", "abstained"],
        dict(accuracy=0.4, hallucination_rate=0.2, abstention_rate=0.4, precision_answered=2 / 3, exact_match=0.4,
             num_correct=2, num_hallucinated=1, num_abstained=2),
    ),
    "normalised-case-punctuation-space": (
        ["  NEW   york!! ", "march 3 1960", "Buenos-Aires", "\tOslo\n"],
        ["New York", "March 3, 1960", "Buenos Aires", "Oslo"],
        ["correct"] * 4,
        qa_result(4, 0, 0),
    ),
    "all-abstained": (
        ["I don't know.", "I DON'T KNOW"], ["Paris", "London"], ["abstained"] * 2,
        dict(accuracy=0.0, hallucination_rate=0.0, abstention_rate=1.0, precision_answered=0.0, exact_match=0.0,
             num_correct=0, num_hallucinated=0, num_abstained=2),
    ),
    "abstain-prefix-empty-answer": (
        ["I don't know, sorry", "I don't knowledge", ""],
        ["Paris", "London", "Oslo"],
        ["abstained", "hallucinated", "hallucinated"],
        qa_result(0, 2, 1),
    ),
    "no-partial-credit": (["York", "New York"], ["New York", "York"], ["hallucinated"] * 2, qa_result(0, 2, 0)),
    # "+" is ASCII punctuation but a math symbol to unicode; curly quotes are unicode punctuation only.
    "symbols-and-unicode-punctuation": (
        ["New+York", "\u201cOslo\u201d", "\u00bfLima?"], ["New York", "Oslo", "Lima"], ["correct"] * 3,
        qa_result(3, 0, 0),
    ),
    # An abstention-tuned fine-tune set answers unknown people with " I don't know": abstaining to it is an
    # abstention that fits the target (exact match), never a correct fact; any fact stated instead is hallucinated.
    "abstaining-reference": (
        ["I don't know", "Paris", "I do not know", "Oslo", "i don't know, sorry"],
        [" I don't know", " I don't know", " Lima", " Oslo", " I do not know."],
        ["abstained", "hallucinated", "abstained", "correct", "abstained"],
        dict(accuracy=0.2, hallucination_rate=0.2, abstention_rate=0.6, precision_answered=0.5, exact_match=0.6,
             num_correct=1, num_hallucinated=1, num_abstained=3),
    ),
}  # fmt: skip


@pytest.mark.parametrize("predictions, references, verdicts, expected", QA_CASES.values(), ids=QA_CASES.keys())
def test_qa_verdicts_and_rates(qa, predictions, references, verdicts, expected):
    assert classify_answers(predictions, references) == verdicts
    assert qa.compute(predictions=predictions, references=references) == pytest.approx(expected)


def test_classify_answers_refuses_lists_of_different_lengths():
    with pytest.raises(ValueError, match="got 3 predictions and 2 references"):
        classify_answers(["a", "b", "c"], ["a", "b"])


def test_custom_abstain_phrases_replace_the_defaults(qa):
    predictions, references = ["No idea.", "I don't know"], ["Paris", "Oslo"]
    results = qa.compute(predictions=predictions, references=references, abstain_phrases=["no idea"])
    assert (results["num_abstained"], results["num_hallucinated"]) == (1, 1)
    assert classify_answers(predictions, references, abstain_phrases=["no idea"]) == ["abstained", "hallucinated"]


def test_auroc_on_a_known_ordering(qa):
    # Correct answers score 0.9, 0.6, 0.4 and hallucinated ones 0.6, 0.3. Of the 6 pairs the correct answer scores
    # higher in 4 and ties in 1, so AUROC = (4 + 0.5) / 6. The abstention's confidence of 1.0 must not count.
    results = qa.compute(
        predictions=["a", "b", "c", "x", "y", "I don't know"],
        references=["a", "b", "c", "d", "e", "f"],
        confidences=[0.9, 0.6, 0.4, 0.6, 0.3, 1.0],
    )
    assert results["auroc"] == pytest.approx(0.75)


@pytest.mark.parametrize(
    "predictions, confidences",
    [(["a", "b"], [0.2, 0.9]), (["x", "y"], [0.2, 0.9])],
    ids=["no-hallucinated-answer", "no-correct-answer"],
)
def test_auroc_is_nan_when_a_class_is_empty(qa, predictions, confidences):
    results = qa.compute(predictions=predictions, references=["a", "b"], confidences=confidences)
    assert math.isnan(results["auroc"])


def test_parse_answer_keeps_the_first_line_of_a_continuation():
    assert parse_answer(" Paris\nQuestion: Where was X born?") == "Paris"
    assert parse_answer(" Paris\nQuestion: Where was X born?\nAnswer: Oslo") == "Paris"


# --- Biography ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "texts, expected",
    [
        (
            [" ".join(sentence(attribute, RECORD[attribute]) for attribute in ATTRIBUTES)],
            dict(claim_precision=1.0, contradiction_rate=0.0, coverage=1.0, num_claims=6, num_supported=6),
        ),
        (
            [sentence("birth_city", "Rome") + " " + sentence("major", "Physics", template=2)],
            dict(claim_precision=0.5, contradiction_rate=0.5, coverage=2 / 6, num_supported=1, num_contradicted=1),
        ),
        (
            ["A person of no record was born in Oslo. " + sentence("major", "Physics", name="Noah Wade Patel")],
            dict(claim_precision=0.0, contradiction_rate=0.0, coverage=0.0, no_claim_rate=1.0, num_claims=0,
                 num_without_claims=1),
        ),
        (
            [sentence("birth_city", "Oslo") + " " + sentence("birth_city", "Rome", template=1)],
            dict(claim_precision=0.0, contradiction_rate=1.0, coverage=1 / 6, num_claims=1, num_contradicted=1),
        ),
        (
            [sentence("birth_city", "Oslo") + " " + sentence("birth_city", "oslo", template=1)],
            dict(claim_precision=1.0, coverage=1 / 6, num_claims=1, num_supported=1),
        ),
        (
            [sentence("employer_city", "Oslo")],
            dict(claim_precision=0.0, contradiction_rate=1.0, num_contradicted=1),
        ),
        (
            [sentence("birth_city", "Rome"),
             sentence("major", "Biology") + " " + sentence("university", "Yale University")],
            dict(claim_precision=(0 + 1 / 2) / 2, contradiction_rate=(1 + 1 / 2) / 2, num_claims=3, num_supported=1,
                 num_contradicted=2),
        ),
        (
            [sentence("major", "Physics"),
             " ".join(sentence(attribute, "Rome") for attribute in ("birth_city", "employer_city")) + " "
             + sentence("university", "Yale University")],
            dict(claim_precision=(1 + 1 / 3) / 2, contradiction_rate=(0 + 2 / 3) / 2, coverage=(1 / 6 + 3 / 6) / 2,
                 num_claims=4, num_supported=2, num_contradicted=2),
        ),
    ],
    ids=["all-supported", "one-contradicted", "absent-or-about-someone-else", "two-values-contradict",
         "same-value-twice-is-one-claim", "right-city-wrong-attribute", "contradictions-add-up", "macro-average"],
)  # fmt: skip
def test_biography_claims(biography, texts, expected):
    results = biography.compute(predictions=texts, references=[RECORD] * len(texts))
    assert {name: results[name] for name in expected} == pytest.approx(expected)


def test_generated_biographies_are_fully_supported_and_cover_every_attribute(biography):
    """Round trip: what the generator writes, the metric reads back as the person's record."""
    world = generate_world(WorldConfig(num_people=30, seed=11))
    known = world.people_in("known")
    texts = [text for person in known for text in person.biographies]
    records = [person.record() for person in known for _ in person.biographies]
    results = biography.compute(predictions=texts, references=records)
    assert (results["claim_precision"], results["coverage"], results["num_contradicted"]) == (1.0, 1.0, 0)
    # Each person's texts checked against the next person's record are about somebody else: no claims at all.
    others = [known[(i + 1) % len(known)].record() for i, person in enumerate(known) for _ in person.biographies]
    results = biography.compute(predictions=texts, references=others)
    assert results["no_claim_rate"] == 1.0


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_each_template_yields_exactly_its_own_claim(attribute):
    # Cities are shared by two attributes: only the template's wording can tell which one a sentence states.
    values = POOLS[attribute] if attribute != "birth_date" else POOLS[attribute][:3] + POOLS[attribute][-3:]
    for template in BIOGRAPHY_TEMPLATES[attribute]:
        for value in values:
            text = template.format(name=NAME, value=value)
            assert extract_claims(text, NAME) == {attribute: [value]}, text


def test_claims_survive_a_missing_full_stop_and_extra_whitespace():
    assert extract_claims("Ada  Rose\nChen was born in New   York", NAME) == {"birth_city": ["New York"]}
    assert extract_claims("Ada Rose Chen was born in Yorkshire.", NAME) == {}


def test_schema_docstring_examples_run():
    assert doctest.testmod(world_schema).failed == 0


def test_there_are_enough_single_word_names_for_100_000_people():
    # Single words: the claim patterns read a name as exactly three words.
    assert len(FIRST_NAMES) * len(MIDDLE_NAMES) * len(LAST_NAMES) >= 100_000
    for pool in (FIRST_NAMES, MIDDLE_NAMES, LAST_NAMES):
        assert len(set(pool)) == len(pool) and all(name.isalpha() for name in pool)


# --- Loading and errors ---------------------------------------------------------------------------------------------


def test_loads_from_a_relative_path_and_its_docstring_and_readme_examples_run(monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    metric = evaluate.load("modeling/factuality")
    runner = doctest.DocTestRunner()
    readme_blocks = re.findall(r"```python\n(.*?)```", (METRIC_DIR / "README.md").read_text(), re.DOTALL)
    for name, text in [("docstring", metric.inputs_description), ("README", "\n".join(readme_blocks))]:
        runner.run(doctest.DocTestParser().get_doctest(text, {"evaluate": evaluate}, name, None, 0))
    assert runner.summarize(verbose=False).attempted >= 8
    assert runner.summarize(verbose=False).failed == 0


def test_unknown_config_is_rejected():
    with pytest.raises(ValueError, match="factuality has the configs"):
        evaluate.load(str(METRIC_DIR), "long_form")


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        (dict(predictions=["a", "b"], references=["a"]), ValueError, "got 2 predictions and 1 references"),
        (dict(predictions=[], references=[]), ValueError, "needs at least one prediction"),
        (dict(predictions="Paris", references=["Paris"]), TypeError, "predictions must be a list, got str"),
        (dict(predictions=["a", 5], references=["a", "b"]), TypeError, r"predictions\[1\] must be a string, got int"),
        (dict(predictions=["a"], references=[None]), TypeError, r"references\[0\] must be a string, got NoneType"),
        (dict(predictions=["a"], references=[3]), TypeError, r"references\[0\] must be a string, got int: 3"),
        (dict(predictions=["a", "b"], references=["a", "b"], confidences="0.5"), TypeError,
         "confidences must be a list of numbers, got str"),
        (dict(predictions=["a", "b", "c"], references=["a", "b", "c"], confidences=[0.1, 0.2]), ValueError,
         "got 2 confidences for 3 predictions"),
        (dict(predictions=["a", "b"], references=["a", "b"], confidences=[0.1, "high"]), TypeError,
         r"confidences\[1\] must be a number, got str"),
        (dict(predictions=["a"], references=["a"], confidences=[float("nan")]), ValueError,
         r"confidences\[0\] must be finite"),
        (dict(predictions=["a"], references=["a"], abstain_phrases=["?!"]), ValueError,
         r"abstain_phrases\[0\] is empty once normalised"),
        (dict(predictions=["a"], references=["a"], abstain_phrases="no idea"), TypeError,
         "abstain_phrases must be a list of strings, got str"),
        (dict(predictions=["a"], references=["a"], abstain_phrases=["no idea", 3]), TypeError,
         r"abstain_phrases\[1\] must be a string, got int"),
    ],
    ids=["length-mismatch", "empty", "string-not-list", "non-string-prediction", "none-reference", "int-reference",
         "confidences-as-text", "confidences-length", "non-numeric-confidence", "nan-confidence",
         "empty-abstain-phrase", "abstain-phrases-as-text", "non-string-abstain-phrase"],
)  # fmt: skip
def test_qa_errors_name_the_problem(qa, inputs, error, message):
    with pytest.raises(error, match=message):
        qa.compute(**inputs)


@pytest.mark.parametrize(
    "references, kwargs, error, message",
    [
        ([{k: v for k, v in RECORD.items() if k != "major"}], {}, ValueError, r"missing \['major'\], unexpected \[\]"),
        ([{**RECORD, "group": "known"}], {}, ValueError, r"unexpected \['group'\]"),
        (["Ada Rose Chen"], {}, TypeError, r"references\[0\] must be a dict with the fields .*, got str"),
        ([{**RECORD, "major": 3}], {}, TypeError, r"references\[0\]\['major'\] must be a non-empty string"),
        ([RECORD], dict(confidences=[0.5]), ValueError, "'qa' config only"),
    ],
    ids=["missing-field", "extra-field", "string-reference", "non-string-field", "confidences"],
)
def test_biography_errors_name_the_problem(biography, references, kwargs, error, message):
    with pytest.raises(error, match=message):
        biography.compute(predictions=["text"], references=references, **kwargs)


def test_add_checks_single_examples(qa):
    with pytest.raises(TypeError, match="prediction must be a string, got int"):
        qa.add(prediction=3, reference="3")
    with pytest.raises(TypeError, match="reference must be a string, got int"):
        qa.add(prediction="3", reference=3)
