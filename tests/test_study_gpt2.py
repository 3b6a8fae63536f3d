"""The whole tiny study with a transformers architecture (a gpt2 built from scratch) in place of the LSTM: every stage
reaches the model only through the Auto classes, `generate` and PEFT. The figures mean nothing; the stages run."""

import json
from pathlib import Path

import pytest
from transformers import GPT2LMHeadModel

from modeling.checkpoints import load_model_and_tokenizer
from modeling.run_config import parse_run_config
from modeling.study import Condition, StudyArguments, plan_conditions, run_study

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "study"


def tiny_gpt2_args(out: Path) -> StudyArguments:
    # The config names its configs relative to the repository; the test runs anywhere.
    argv = [str(CONFIGS / "tiny_gpt2_study.yaml"), "--output_dir", str(out)]
    argv += ["--pretrain_config", str(CONFIGS / "tiny_gpt2.yaml")]
    argv += ["--finetune_config", str(CONFIGS / "finetune_tiny.yaml")]
    return parse_run_config((StudyArguments,), argv)[0]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return run_study(tiny_gpt2_args(tmp_path_factory.mktemp("study_gpt2") / "run"))


def test_the_study_runs_every_stage_on_a_gpt2(study):
    model, _ = load_model_and_tokenizer(study / "pretrain" / "model")
    assert type(model) is GPT2LMHeadModel
    results = json.loads((study / "results.json").read_text())
    planned = [condition.name for condition in plan_conditions(tiny_gpt2_args(study))]
    assert [c["name"] for c in results["conditions"]] == [*planned, "full_u0.5_n6_early_stopping"]
    # The probe covers every fact of every person: 40 people x 6 attributes.
    assert sum(sum(counts.values()) for counts in results["probe"]["agreement"].values()) == 240
    trained = [c for c in results["conditions"] if not c.get("skipped")]
    for condition in trained:
        if condition["mitigation"] != "early_stopping":
            assert [record["epoch"] for record in condition["per_epoch"]] == [0, 10, 20, 40, 80]
    lora = [run for c in trained if c["method"] == "lora" for run in c["runs"]]
    assert lora and all(0 < run["trainable_share"] < 0.5 for run in lora)
    args = tiny_gpt2_args(study)
    judged = [c for c in trained if c["mitigation"] != "early_stopping" and args.judged_by_detectors(Condition.of(c))]
    assert judged and all(c["detector"]["num_test"] > 0 for c in judged)
    report = (study / "report.md").read_text()
    assert all(f"| {c['name']} |" in report for c in trained)


@pytest.mark.learns
def test_full_and_lora_fine_tuning_fit_the_fine_tune_set(study):
    results = json.loads((study / "results.json").read_text())
    fitted = {
        c["name"]: max(r["finetune_exact_match"] for r in c["per_epoch"])
        for c in results["conditions"]
        if c["per_epoch"]
    }
    assert fitted["full_u0.5_n6_none"] == 1.0
    assert fitted["lora_u0.5_n6_none"] >= 0.5  # LoRA learns too (5 of 6 in one run)
