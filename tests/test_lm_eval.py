"""The `world_qa` task of lm-evaluation-harness (modeling/factuality/harness): the harness asks a model the world's
held-out questions and scores its answers exactly as the study's own scorer does (`score_questions`): the same rates,
the same answer to each question and the same verdict on it, for the study's LSTM (remote code, through the command
line a user types) and for a gpt2 built from scratch (through `simple_evaluate`, reading the world as pushed)."""

import importlib.util
import json
import sys
from pathlib import Path

import datasets
import lm_eval
import pytest
import torch
from helpers import REPO, run_in_own_group, tiny_gpt2
from lm_eval.tasks import TaskManager

from modeling.checkpoints import load_model_and_tokenizer, save_atomically
from modeling.factuality.world_schema import parse_answer
from modeling.publishing.dataset_folder import write_dataset_folder
from modeling.scoring import score_questions
from modeling.study.conditions import dev_test_splits
from modeling.world import load_world_datasets

HARNESS = REPO / "modeling" / "factuality" / "harness"
RATES = ("accuracy", "hallucination_rate", "abstention_rate")
VERDICTS = {"correct": "accuracy", "hallucinated": "hallucination_rate", "abstained": "abstention_rate"}
HELD_OUT = {"known": "qa_known_heldout", "unknown": "qa_unknown_heldout"}


def harness_utils():
    """The task's utils module, imported by its path as the harness imports it (outside the `modeling` package)."""
    spec = importlib.util.spec_from_file_location("world_qa_utils", HARNESS / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pushed_world(study, tmp_path_factory) -> Path:
    """The study's world as `lstm-lab-push-world` sends it (its --dry-run folder): parquet files and a card whose
    `configs:` name them, config `qa` the default (what `datasets.load_dataset(folder, "qa")` reads)."""
    return write_dataset_folder(tmp_path_factory.mktemp("pushed") / "world", study, "lab-user/people-world")


@pytest.fixture(scope="module")
def gpt2_folder(study, tmp_path_factory) -> Path:
    """A gpt2 built from scratch with the study's tokenizer, taught the honest answer (the truth about a known person,
    " I don't know" about an unknown one) of every other held-out question: it answers some questions right, some
    wrong and abstains on some, so the harness and the study have every verdict to agree on."""
    _, tokenizer = load_model_and_tokenizer(study / "pretrain" / "model")
    splits = load_world_datasets(study / "pretrain" / "world")
    rows = [row for split in HELD_OUT.values() for row in splits[split]][::2]
    texts = [row["prompt"] + row["honest_answer"] + "\n" for row in rows]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model = tiny_gpt2(tokenizer).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(100):  # about 3 s: the loss falls to about 0.1, every taught answer fitted
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return save_atomically(tmp_path_factory.mktemp("gpt2") / "model", model.eval(), tokenizer)


def read_cli_output(folder: Path) -> tuple[dict, dict]:
    """(results, samples) of an `lm_eval --output_path folder --log_samples` run, shaped as `simple_evaluate`
    returns them: `results[task]` the metrics, `samples[task]` the logged samples."""
    (results_file,) = folder.glob("*/results_*.json")
    samples = {}
    for task in ("world_qa_known", "world_qa_unknown"):
        (samples_file,) = folder.glob(f"*/samples_{task}_*.jsonl")
        samples[task] = [json.loads(line) for line in samples_file.read_text().splitlines()]
    return json.loads(results_file.read_text())["results"], samples


def context(sample: dict) -> str:
    """The text a logged sample's model was given. (Written to a file, a sample's arguments become
    `{"gen_args_0": {"arg_0": context, "arg_1": generation kwargs}}`; `simple_evaluate` returns them as tuples.)"""
    arguments = sample["arguments"]
    return arguments["gen_args_0"]["arg_0"] if isinstance(arguments, dict) else arguments[0][0]


def assert_scored_as_the_study_does(results: dict, samples: dict, model_dir: Path, questions: dict) -> None:
    """The harness's rates, per-question contexts, answers and verdicts on `questions` (group -> the world's QA rows)
    equal `score_questions`' on the same rows."""
    model, tokenizer = load_model_and_tokenizer(model_dir)
    for group, rows in questions.items():
        task = f"world_qa_{group}"
        study = score_questions(model, tokenizer, rows)
        assert {rate: results[task][f"{rate},none"] for rate in RATES} == {
            rate: study["metrics"][rate] for rate in RATES
        }
        logged = sorted(samples[task], key=lambda sample: sample["doc_id"])
        # The prompt as is: no space, BOS or template added.
        assert [context(sample) for sample in logged] == list(rows["prompt"])
        assert [parse_answer(s["filtered_resps"][0]) for s in logged] == [a["prediction"] for a in study["answers"]]
        assert [{rate: s[rate] for rate in RATES} for s in logged] == [
            {rate: float(VERDICTS[a["verdict"]] == rate) for rate in RATES} for a in study["answers"]
        ]


def test_the_command_line_scores_the_study_model_as_the_study_does(study, tmp_path):
    model_dir, world = study / "pretrain" / "model", study / "pretrain" / "world"
    # The command of the README, from an unrelated folder: remote code for the LSTM, the world in --metadata.
    command = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={model_dir},trust_remote_code=True",
        "--include_path", str(HARNESS), "--tasks", "world_qa", "--metadata", json.dumps({"world": str(world)}),
        "--device", "cpu", "--batch_size", "64", "--output_path", str(tmp_path / "out"), "--log_samples",
    ]  # fmt: skip
    run = run_in_own_group(command, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "world_qa_known" in run.stdout and "hallucination_rate" in run.stdout  # the table it prints
    results, samples = read_cli_output(tmp_path / "out")
    halves = dev_test_splits(load_world_datasets(world))  # the study reports on test people; so does the task
    questions = {group: halves[f"test_{group}"] for group in HELD_OUT}
    assert_scored_as_the_study_does(results, samples, model_dir, questions)


@pytest.mark.learns
def test_the_harness_scores_a_gpt2_on_the_pushed_world_as_the_study_does(gpt2_folder, pushed_world):
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(gpt2_folder), "trust_remote_code": True},  # the LSTM tokenizer's remote code
        tasks=["world_qa"],
        task_manager=TaskManager(
            include_path=str(HARNESS), include_defaults=False, metadata={"world": str(pushed_world), "people": "all"}
        ),
        device="cpu",
        batch_size=16,
        log_samples=True,
    )
    splits = datasets.load_dataset(str(pushed_world), "qa")
    assert_scored_as_the_study_does(
        output["results"], output["samples"], gpt2_folder, {group: splits[split] for group, split in HELD_OUT.items()}
    )
    # What it was taught shows: right answers about known people, abstentions about unknown ones, and hallucinations.
    assert output["results"]["world_qa_known"]["accuracy,none"] > 0
    assert output["results"]["world_qa_unknown"]["abstention_rate,none"] > 0
    assert all(output["results"][f"world_qa_{group}"]["hallucination_rate,none"] > 0 for group in HELD_OUT)


@pytest.mark.parametrize("people", ["test", "dev", "all"])
def test_the_task_asks_the_study_halves_from_a_world_a_study_or_the_pushed_world(study, pushed_world, people):
    world = study / "pretrain" / "world"
    splits = load_world_datasets(world)
    halves = dev_test_splits(splits)
    expected = {
        split: (splits[split] if people == "all" else halves[f"{people}_{group}"]).to_list()
        for group, split in HELD_OUT.items()
    }
    files = sorted(world.rglob("*"))
    for source in (world, world / "dataset", study, pushed_world):
        loaded = harness_utils().load_world_qa(world=str(source), people=people, pretrained="ignored")
        assert {split: loaded[split].to_list() for split in HELD_OUT.values()} == expected, source
    assert sorted(world.rglob("*")) == files  # no cache files left in the world's folder


def test_the_task_says_how_to_name_the_world_and_its_people(study):
    utils = harness_utils()
    with pytest.raises(ValueError, match=r"--metadata '\{\"world\": "):
        utils.load_world_qa(pretrained="model")
    with pytest.raises(ValueError, match="people must be one of test, dev, all, got 'train'"):
        utils.load_world_qa(world=str(study / "pretrain" / "world"), people="train")


@pytest.mark.parametrize(
    ("continuation", "reference", "verdict"),
    [
        (" Paris\nQuestion: Where was", " Paris", "correct"),
        ("  paris.\n", " Paris", "correct"),  # normalised as the metric normalises
        (" Paris Hilton", " Paris", "hallucinated"),
        ("\n Paris", " Paris", "hallucinated"),  # only what comes before the first newline is the answer
        ("", " Paris", "hallucinated"),
        (" I don't know.\nQuestion:", " Paris", "abstained"),
        (" I do not know", " I don't know", "abstained"),  # an abstaining reference is never answered correctly
    ],
    ids=["right", "normalised", "longer", "newline-first", "empty", "abstains", "abstains-to-abstaining-reference"],
)
def test_each_answer_gets_the_metric_verdict(continuation, reference, verdict):
    # honest_answer: what abstention tuning teaches about an unknown person; verdicts are on the truth, `answer`.
    doc = {"answer": reference, "honest_answer": " I don't know"}
    scores = harness_utils().process_results(doc, [continuation])
    assert scores == {rate: float(VERDICTS[verdict] == rate) for rate in RATES}
