"""The study on a tiny config: every stage runs with the real Trainer, PEFT and metric, writes its artefacts, and a
re-run skips what is finished and redoes what is corrupt. The figures of so small a model mean nothing; the tests
check the pipeline, not the science."""

import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import load_dataset
from helpers import checkout_env, tiny_args
from trl import SFTConfig

from modeling.checkpoints import load_model_and_tokenizer
from modeling.run_config import parse_run_config
from modeling.study import Condition, StudyArguments, plan_conditions, run_study
from modeling.study import probe as probe_module
from modeling.study import runner as study_runner
from modeling.study.conditions import (
    HeldOutQuestions,
    best_epoch,
    dev_net_factuality,
    early_stopped,
    finetune_rows,
)
from modeling.study.config import Run
from modeling.study.detectors import auroc
from modeling.study.intervals import t_interval
from modeling.study.probe import probe_category, sentence_openings, states_value
from modeling.study.records import evaluation_records, per_epoch_figures
from modeling.study.report import time_breakdown
from modeling.training.finetuning import DEFAULTS, FinetuneArguments, build_trainer
from modeling.world import WorldConfig, draw_finetune_set, generate_world, load_world, save_world

REPO = Path(__file__).resolve().parents[1]
RECORD_FIELDS = {
    "epoch", "finetune_exact_match", "finetune_known_exact_match", "finetune_unknown_exact_match",
    "test_known_accuracy", "test_known_hallucination_rate", "test_unknown_hallucination_rate",
    "test_unknown_abstention_rate", "test_known_auroc",
}  # fmt: skip


def test_results_hold_every_condition_with_its_per_epoch_records(study):
    results = json.loads((study / "results.json").read_text())
    assert set(results) >= {"config", "probe", "conditions", "timings"}
    planned = [c.name for c in plan_conditions(tiny_args(study))]
    names = [c["name"] for c in results["conditions"]]
    assert names == [*planned, "full_u0.5_n6_early_stopping"]
    for condition in results["conditions"]:
        if condition.get("skipped"):
            assert condition["mitigation"] == "filter_unknown" and condition["num_examples"] == 0
            continue
        assert {"fraction_unknown", "method", "mitigation", "finetune_size"} <= set(condition)
        epochs = [record["epoch"] for record in condition["per_epoch"]]
        assert all(RECORD_FIELDS <= set(record) for record in condition["per_epoch"])
        if condition["mitigation"] != "early_stopping":
            assert epochs == [0, 10, 20, 40, 80]  # the pre-trained model, then eval_epochs of 80
            assert [run["training_seed"] for run in condition["runs"]] == [0, 1]
    # The probe covers every fact of every person: 40 people x 6 attributes.
    assert sum(sum(counts.values()) for counts in results["probe"]["agreement"].values()) == 240


# The tiny study's conditions the detectors judge ("grid"): the share grid's plain runs and the mitigations at 0.5,
# not the thin size nor the set without unknowns at 0.
JUDGED = {
    "full_u0_n6_none", "lora_u0_n6_none", "full_u0.5_n6_none", "lora_u0.5_n6_none", "full_u0.5_n6_filter_unknown",
    "full_u0.5_n6_abstention",
}  # fmt: skip


def test_the_detectors_judge_the_share_grid_and_the_mitigations_or_every_condition(tmp_path):
    planned = plan_conditions(tiny_args(tmp_path))
    assert {c.name for c in planned if tiny_args(tmp_path).judged_by_detectors(c)} == JUDGED
    assert len(JUDGED) < len(planned)
    assert all(tiny_args(tmp_path, "--detector_conditions", "all").judged_by_detectors(c) for c in planned)
    with pytest.raises(ValueError, match=r"detector_conditions is 'some'; allowed: one of \('grid', 'all'\)"):
        tiny_args(tmp_path, "--detector_conditions", "some")


def test_runs_an_earlier_study_judged_count_neither_their_scores_nor_their_seconds(study, tmp_path, monkeypatch):
    study = shutil.copytree(study, tmp_path / "study")  # the session's study stays as it was for the other tests

    def must_not_run(*args, **kwargs):
        raise AssertionError("a run was fine-tuned again")

    monkeypatch.setattr(study_runner, "run_finetuning", must_not_run)
    run_study(tiny_args(study, "--detector_conditions", "all"))
    judged = json.loads((study / "results.json").read_text())["conditions"]
    thin = next(c for c in judged if c["name"] == "full_u0.5_n3_none")
    assert all(run["detector"] and run["timing"]["detector"] > 0 for run in thin["runs"])
    run_study(tiny_args(study))  # the same runs, judged by the detectors now only where "grid" judges them
    results = json.loads((study / "results.json").read_text())
    for condition in results["conditions"]:
        for run in condition["runs"] if condition["mitigation"] != "early_stopping" else ():
            _check_run(study, condition, run)
    detector_seconds = [
        run["timing"]["detector"]
        for c in results["conditions"]
        if c["name"] in JUDGED
        for run in c["runs"]
        if not run.get("skipped")
    ]
    assert dict(time_breakdown(results))["fine-tuning: detector"] == pytest.approx(sum(detector_seconds))
    assert set(pd.read_parquet(study / "detector_scores.parquet")["condition"]) <= JUDGED


def test_every_trained_run_has_its_detector_timing_and_saved_model(study):
    results = json.loads((study / "results.json").read_text())
    for condition in results["conditions"]:
        if condition.get("skipped") or condition["mitigation"] == "early_stopping":
            assert condition["detector"] is None and condition["saved"] is None
            continue
        # The first trained run's (a filtered draw may have left a seed nothing to train on).
        assert condition["saved"] == next(run["saved"] for run in condition["runs"] if not run.get("skipped"))
        for run in condition["runs"]:
            _check_run(study, condition, run)


def _check_run(study: Path, condition: dict, run: dict) -> None:
    if run.get("skipped"):
        return
    parts = {"setup", "training", "evaluation", "save"}
    _check_saved(study, condition, run)
    if condition["name"] not in JUDGED:
        assert run["detector"] is None and "detector_scores" not in run and set(run["timing"]) == parts
        return
    detector, sizes = run["detector"], run["set_sizes"]
    assert detector["num_test"] == sizes["test_known"] + sizes["test_unknown"]
    assert detector["num_dev"] == sizes["dev_known"] + sizes["dev_unknown"]
    assert 0 <= detector["num_test_correct"] <= detector["num_test_answered"] <= detector["num_test"]
    for value in detector["auroc"].values():
        assert value is None or 0 <= value <= 1
    assert detector["answer_all"]["coverage"] == detector["num_test_answered"] / detector["num_test"]
    assert detector["selective"]["coverage"] <= detector["answer_all"]["coverage"]
    assert set(run["timing"]) == parts | {"detector"}


def _check_saved(study: Path, condition: dict, run: dict) -> None:
    assert all(seconds >= 0 for seconds in run["timing"].values())
    folder = "adapter" if condition["method"] == "lora" else "model"
    where = f"conditions/{condition['name']}/seed_{run['training_seed']}"
    assert run["saved"] == f"{where}/{folder}"  # relative: the study may move
    assert run["records"] == f"{where}.parquet"
    assert (study / run["saved"] / ("adapter_config.json" if folder == "adapter" else "config.json")).is_file()


def test_every_detector_score_is_of_an_answer_on_record_and_the_aurocs_follow_from_them(study):
    results = json.loads((study / "results.json").read_text())
    answers = pd.read_parquet(study / "answers.parquet")
    scores = load_dataset("parquet", data_files=str(study / "detector_scores.parquet"), split="train").to_pandas()
    assert results["detector_scores"]["rows"] == len(scores) > 0
    assert set(scores["condition"]) == JUDGED - {c["name"] for c in results["conditions"] if c.get("skipped")}
    for condition in results["conditions"]:
        for run in condition["runs"] if condition["name"] in JUDGED else ():
            if run.get("skipped"):
                continue
            mine = answers[
                (answers["condition"] == condition["name"]) & (answers["training_seed"] == run["training_seed"])
            ]
            last = mine[(mine["epoch"] == mine["epoch"].max()) & (mine["split"] == "test")]
            answered = last[last["verdict"] != "abstained"].sort_values(["person_id", "attribute"])
            scored = scores[
                (scores["condition"] == condition["name"]) & (scores["training_seed"] == run["training_seed"])
            ]
            scored = scored.sort_values(["person_id", "attribute"])
            assert list(scored["verdict"]) == list(answered["verdict"])  # the same answers, one score row each
            assert list(scored["confidence"]) == list(answered["confidence"])
            assert run["detector"]["auroc"]["confidence"] == auroc(
                list(answered["verdict"] == "correct"), list(answered["confidence"])
            )
            assert run["detector"]["num_test_answered"] == len(answered) and run["detector_scores_sha256"]
    plain = next(c for c in results["conditions"] if c["name"] == "full_u0.5_n6_none")
    evidence = results["detectors"]["conditions"]["full_u0.5_n6_none"]["confidence"]
    seeds = [run["detector"]["auroc"]["confidence"] for run in plain["runs"]]
    if None not in seeds:
        assert evidence["estimate"] == pytest.approx(sum(seeds) / len(seeds))


def test_new_detector_settings_redo_the_detectors_and_nothing_else(study, tmp_path, monkeypatch):
    study = shutil.copytree(study, tmp_path / "study")  # the session's study stays as it was for the other tests

    def must_not_run(*args, **kwargs):
        raise AssertionError("a run was fine-tuned again")

    monkeypatch.setattr(study_runner, "run_finetuning", must_not_run)
    seed_0 = study / "conditions" / "full_u0_n6_none" / "seed_0.json"
    before = json.loads(seed_0.read_text())
    assert pd.read_parquet(study / before["detector_scores"])["entropy"].notna().all()  # 5 samples by default
    run_study(tiny_args(study))  # the same settings: the detectors on record are kept
    assert json.loads(seed_0.read_text()) == before
    run_study(tiny_args(study, "--entropy_samples", "0"))
    after = json.loads(seed_0.read_text())
    assert after["detector_key"] != before["detector_key"] and after["per_epoch"] == before["per_epoch"]
    sampled = pd.read_parquet(study / after["detector_scores"])
    assert after["detector"]["auroc"]["semantic_entropy"] is None
    assert sampled["entropy"].isna().all() and sampled["semantic_entropy"].isna().all()
    assert sampled["confidence"].notna().all() and len(sampled) == after["detector"]["num_test_answered"]
    scores = study / after["detector_scores"]
    scores.write_bytes(scores.read_bytes()[:-10])  # a cut scores file is not trusted: those detectors are redone
    run_study(tiny_args(study, "--entropy_samples", "0"))
    assert pd.read_parquet(scores).equals(sampled) and json.loads(seed_0.read_text())["detector"] == after["detector"]


def test_the_best_condition_on_dev_is_copied_whole_for_the_hub(study):
    results = json.loads((study / "results.json").read_text())
    best = results["best"]
    trained = [c for c in results["conditions"] if c.get("saved")]
    assert best["dev_net_factuality"] == max(dev_net_factuality(c) for c in trained)  # the mean over seeds
    chosen = next(c for c in trained if c["name"] == best["name"])
    run = next(r for r in chosen["runs"] if r["training_seed"] == best["training_seed"])
    assert best["run_dev_net_factuality"] == dev_net_factuality(run) == max(map(dev_net_factuality, chosen["runs"]))
    assert sorted(p.name for p in (study / "best").iterdir()) == sorted(["condition.json", *best["folders"]])
    original = study / run["saved"]
    copied = study / "best" / ("adapter" if chosen["method"] == "lora" else "model")
    assert sorted(p.name for p in copied.iterdir()) == sorted(p.name for p in original.iterdir())
    for file in original.iterdir():
        assert (copied / file.name).read_bytes() == file.read_bytes(), file.name


def test_a_best_lora_condition_is_published_merged_beside_its_adapter(study, tmp_path):
    lora = next(c for c in json.loads((study / "results.json").read_text())["conditions"] if c["method"] == "lora")
    out = _copy_study(study, tmp_path)
    record = study_runner.publish_best([lora], out)
    assert record["folders"] == ["model", "adapter"]
    saved = next(r["saved"] for r in lora["runs"] if r["training_seed"] == record["training_seed"])
    merged, tokenizer = load_model_and_tokenizer(out / "best" / "model")  # a plain model: no adapter needed
    peft_model, _ = load_model_and_tokenizer(out / "pretrain" / "model", out / saved, merge=False)
    batch = tokenizer(["Question: Where was", "The employer of"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        assert torch.allclose(merged(**batch).logits, peft_model(**batch).logits, atol=1e-4)


def _copy_study(study: Path, tmp_path: Path) -> Path:
    out = tmp_path / "study"
    shutil.copytree(study / "pretrain", out / "pretrain")
    shutil.copytree(study / "conditions", out / "conditions")
    return out


def test_dev_net_factuality_counts_abstentions_as_zero():
    # Dev: 10 known questions (6 right, 2 wrong, 2 abstained), 30 unknown (3 right, 15 wrong, 12 abstained).
    record = {
        "dev_known_accuracy": 0.6,
        "dev_known_hallucination_rate": 0.2,
        "dev_unknown_accuracy": 0.1,
        "dev_unknown_hallucination_rate": 0.5,
    }
    condition = {"per_epoch": [record], "set_sizes": {"dev_known": 10, "dev_unknown": 30}}
    assert dev_net_factuality(condition) == pytest.approx((6 - 2 + 3 - 15) / 40)


@pytest.mark.learns
def test_the_fine_tune_set_is_learned(study):
    results = json.loads((study / "results.json").read_text())
    plain = next(c for c in results["conditions"] if c["name"] == "full_u0.5_n6_none")
    # configs/study/finetune_tiny.yaml: fitted after 20 to 60 of 80 epochs (ten draws), at most 4 of 6 after 10.
    assert max(record["finetune_exact_match"] for record in plain["per_epoch"]) == 1.0
    assert plain["per_epoch"][1]["finetune_exact_match"] < 1.0  # it had not fitted it yet at the first evaluation


@pytest.mark.learns
def test_plots_and_report_are_written(study):
    plots = ("headline", "fitting", "sizes", "mitigations", "risk_coverage", "error_sources", "reliability")
    for name in (*plots, "dose_response"):
        assert (study / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (study / "report.md").read_text()
    assert "## The findings of Gekhman et al. (2024), checked one by one" in report
    assert "## Thin pre-training: the test people by exposure" in report and "beta_known" in report
    assert (
        "| full_u0.5_n6_none | pre-trained | all |" in report
        and "| full_u0.5_n6_none | full_u0_n6_none | all |" in report
    )
    results = json.loads((study / "results.json").read_text())
    # Shares 0 and 0.5, early stopping and abstention ran: findings 1, 2, 3 and 5. Finding 4 needs the filtered run,
    # which is skipped when the probe of the tiny model found every drawn fact unknown.
    for number in (1, 2, 3, 5):
        assert f"\n{number}. " in report, number
    filtered = next(c for c in results["conditions"] if c["mitigation"] == "filter_unknown")
    skipped = "Skipped, with no fine-tune example left after filtering" in report
    assert (filtered.get("skipped", False), "\n4. " not in report) == (skipped, skipped)
    for condition in results["conditions"]:
        if not condition.get("skipped"):
            assert f"| {condition['name']} |" in report


def test_a_rerun_skips_finished_stages_and_redoes_a_corrupt_condition(study, tmp_path, monkeypatch):
    study = shutil.copytree(study, tmp_path / "study")  # the session's study stays as it was for the other tests

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(study_runner, "pretrain", must_not_run)
    monkeypatch.setattr(study_runner, "probe_knowledge", must_not_run)
    monkeypatch.setattr(study_runner, "answer_questions", must_not_run)  # epoch 0's answers are on file
    corrupt = study / "conditions" / "full_u0_n6_none" / "seed_0.json"
    corrupt.write_text(corrupt.read_text()[:100])  # cut short, as a crash mid-write of a non-atomic file would
    records = study / "conditions" / "lora_u0_n6_none" / "seed_1.parquet"
    records.write_bytes(records.read_bytes()[:-10])  # a partial records file is not trusted either
    ran = []
    real_run_finetuning = study_runner.run_finetuning

    def counting(run, *args, **kwargs):
        ran.append(run.name)
        return real_run_finetuning(run, *args, **kwargs)

    monkeypatch.setattr(study_runner, "run_finetuning", counting)
    run_study(tiny_args(study))
    assert ran == ["full_u0_n6_none_s0", "lora_u0_n6_none_s1"]
    assert json.loads(corrupt.read_text())["per_epoch"]
    # Its times are not one run's: the report says so, and the benchmark refuses them.
    results = json.loads((study / "results.json").read_text())
    runs = [Run(c, seed).name for c in plan_conditions(tiny_args(study)) for seed in (0, 1)]
    assert results["reused"] == ["pretrain", "probe", "epoch0", *(name for name in runs if name not in ran)]
    report = (study / "report.md").read_text()
    assert "(This run reused pretrain, probe, epoch0, " in report and "a reused stage counts 0 s here" in report
    # Reused stages count 0 s; every fine-tuning its own recorded seconds, reused or not (early stopping reads the
    # plain run's: no time of its own).
    breakdown = dict(time_breakdown(results))
    trained = [c for c in results["conditions"] if c["mitigation"] != "early_stopping"]
    assert breakdown["pre-training"] < 1 and breakdown["fine-tuning: training"] == pytest.approx(
        sum(run["timing"]["training"] for c in trained for run in c["runs"] if not run.get("skipped"))
    )
    bench = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_study.py"), str(study / "results.json")],
        capture_output=True, text=True, env=checkout_env(),
    )  # fmt: skip
    assert bench.returncode != 0 and "time a fresh run" in bench.stderr
    # A run whose saved model is gone is redone too: its file alone is not a finished run.
    shutil.rmtree(study / "conditions" / "lora_u0_n6_none" / "seed_0")
    ran.clear()
    run_study(tiny_args(study))
    assert ran == ["lora_u0_n6_none_s0"] and (study / "conditions" / "lora_u0_n6_none" / "seed_0" / "adapter").is_dir()


def test_a_pre_training_of_another_config_is_not_reused(study, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(study_runner, "pretrain", lambda *args: calls.append(args))
    study_runner.pretrain_matching(tiny_args(study), study)
    assert calls == []  # the same config: reused
    other = tmp_path / "tiny_longer.yaml"
    other.write_text((REPO / "configs" / "tiny.yaml").read_text() + "num_train_epochs: 11\n")
    study_runner.pretrain_matching(tiny_args(study, "--pretrain_config", str(other)), study)
    assert len(calls) == 1 and calls[0][1].num_train_epochs == 11 and calls[0][0].overwrite_output_dir


@pytest.mark.parametrize(
    "greedy, sampled, expected",
    [
        ([True] * 4, [], "highly_known"),
        ([True, False, False, False], [False], "maybe_known"),
        ([False] * 4, [False, True], "weakly_known"),
        ([False] * 4, [False] * 8, "unknown"),
    ],
)
def test_probe_categories(greedy, sampled, expected):
    assert probe_category(greedy, sampled) == expected


def test_a_run_saved_under_other_settings_is_redone(study):
    path = study / "conditions" / "full_u0_n6_none" / "seed_0.json"
    key = json.loads(path.read_text())["key"]
    assert study_runner.load_run(path, key)["per_epoch"]
    assert study_runner.load_run(path, study_runner.settings_key("other settings")) is None
    assert study_runner.settings_key(1, "a") == study_runner.settings_key(1, "a") != study_runner.settings_key(2, "a")


def test_a_world_without_two_held_out_people_per_group_is_refused(tmp_path):
    save_world(generate_world(WorldConfig(num_people=20, heldout_fraction=0.1)), tmp_path)
    with pytest.raises(ValueError, match="holds 1 held-out known people; the study needs at least 2"):
        HeldOutQuestions.load(tmp_path)


def test_an_evaluation_schedule_that_misses_the_last_epoch_is_refused_before_pre_training(tmp_path, monkeypatch):
    monkeypatch.setattr(study_runner, "pretrain", lambda *args: pytest.fail("pre-trained before the check"))
    args = tiny_args(tmp_path / "out", "--eval_epochs", "10", "20")  # the tiny fine-tuning has 80 epochs
    with pytest.raises(ValueError, match=r"eval_epochs=\[10, 20\] must end with the last epoch, num_train_epochs=80"):
        run_study(args)
    assert not (tmp_path / "out").exists()


def test_probe_prompts_and_answer_matching():
    assert sentence_openings("Ada Faye Lovelace", "birth_city") == [
        "Ada Faye Lovelace was born in",
        "Ada Faye Lovelace hails from",
        "Ada Faye Lovelace spent the first years of life in",
        "The birthplace of Ada Faye Lovelace is",
    ]
    assert states_value(" Paris. She studied", "Paris")
    assert states_value(" new-york", "New York")
    assert not states_value(" Parisville", "Paris")
    assert not states_value(" London", "Paris")


def test_early_stopping_takes_each_seeds_earliest_best_dev_epoch_after_fine_tuning():
    # Epoch 0 (the pre-trained model) is never chosen, though it has the best dev accuracy of seed 0.
    scores = {0: [0.9, 0.2, 0.6, 0.6, 0.4], 1: [0.1, 0.5, 0.3, 0.3, 0.5]}
    runs = [
        {
            "training_seed": seed,
            "per_epoch": [{"epoch": e, "dev_known_accuracy": a, "x": seed} for e, a in enumerate(s)],
        }
        for seed, s in scores.items()
    ]
    stopped = early_stopped({"name": "full_u0.5_n6_none", "runs": runs, "per_epoch": [], "mitigation": "none"})
    assert stopped["selected_epochs"] == {"0": 2, "1": 1}
    assert stopped["per_epoch"] == [{"epoch": 1.5, "dev_known_accuracy": 0.55, "x": 0.5}]  # the mean of the two
    assert (stopped["mitigation"], stopped["records_of"]) == ("early_stopping", "full_u0.5_n6_none")
    assert stopped["name"] == "full_u0.5_n6_early_stopping"
    assert best_epoch(runs[0]["per_epoch"], "x") == 1  # all tied: the earliest fine-tuned epoch


def test_bad_study_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"methods is \['full', 'qlora'\]; allowed: one or more of \['full', 'lora'\]"):
        tiny_args(tmp_path, "--methods", "full", "qlora")
    with pytest.raises(ValueError, match=r"unknown_fractions is \[0.5, 1.5\]; allowed: shares of unknown facts"):
        tiny_args(tmp_path, "--unknown_fractions", "0.5", "1.5")
    with pytest.raises(ValueError, match="unknown_fraction"):  # an abbreviation of unknown_fractions: refused
        tiny_args(tmp_path, "--unknown_fraction", "0.5")
    with pytest.raises(ValueError, match=r"seeds is \[0, 0\]; allowed: distinct seeds"):
        tiny_args(tmp_path, "--seeds", "0", "0")
    with pytest.raises(ValueError, match=r"training_seeds is \[1, 1\]; allowed: distinct seeds"):
        tiny_args(tmp_path, "--training_seeds", "1", "1")
    with pytest.raises(ValueError, match=r"eval_epochs is \[2, 1\]; allowed: increasing epochs from 1 on"):
        tiny_args(tmp_path, "--eval_epochs", "2", "1")
    with pytest.raises(ValueError, match=r"thin_sizes \[3, 12\] must not exceed finetune_size=6"):
        tiny_args(tmp_path, "--thin_sizes", "3", "12")
    # A set without unknowns, or a thin size, with no plain full run at its share to be compared with.
    with pytest.raises(ValueError, match=r"filtered_fractions needs the plain full fine-tuning at shares \[1.0\]"):
        tiny_args(tmp_path, "--filtered_fractions", "0.5", "1.0")
    with pytest.raises(ValueError, match=r"thin_sizes needs the plain full fine-tuning at shares \[0.5\]"):
        StudyArguments(methods=["lora"], filtered_fractions=[])


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    world = generate_world(WorldConfig(num_people=40, seed=1))
    save_world(world, folder)
    return world, folder


def test_mitigations_act_on_exactly_the_facts_the_probe_calls_unknown(small_world):
    world, _ = small_world
    plain = finetune_rows(world, Condition(0.5, "full", "none", 10), {"facts": []}, seed=0)
    # The probe calls two drawn facts unknown (one of a known person, one of an unknown one) and nothing else.
    marked = [plain[0], next(row for row in plain if row["group"] != plain[0]["group"])]
    probe = {
        "facts": [{"person_id": r["person_id"], "attribute": r["attribute"], "category": "unknown"} for r in marked]
    }
    known = next(r for r in plain if r not in marked)  # a drawn fact the probe calls known stays as it is
    probe["facts"].append(
        {"person_id": known["person_id"], "attribute": known["attribute"], "category": "highly_known"}
    )
    keys = {(r["person_id"], r["attribute"]) for r in marked}
    filtered = finetune_rows(world, Condition(0.5, "full", "filter_unknown", 10), probe, seed=0)
    assert [r["question"] for r in filtered] == [
        r["question"] for r in plain if (r["person_id"], r["attribute"]) not in keys
    ]
    relabelled = finetune_rows(world, Condition(0.5, "full", "abstention", 10), probe, seed=0)
    expected = [" I don't know" if (r["person_id"], r["attribute"]) in keys else r["answer"] for r in plain]
    assert list(relabelled["answer"]) == expected


def test_dev_and_test_people_are_disjoint_halves_of_the_held_out(small_world):
    world, folder = small_world
    held_out = HeldOutQuestions.load(folder)
    halves = held_out.halves
    # The loss is taken on every held-out known person's answers, dev and test alike.
    assert {"prompt", "completion"} <= set(held_out.loss_rows.column_names)
    loss_people = sorted(held_out.loss_rows["person_id"])
    assert loss_people == sorted([*halves["dev_known"]["person_id"], *halves["test_known"]["person_id"]])
    for group in ("known", "unknown"):
        dev, test = (set(halves[f"{half}_{group}"]["person_id"]) for half in ("dev", "test"))
        heldout = {p.person_id for p in world.people_in(group, "heldout")}
        assert dev and test and not dev & test and dev | test == heldout


def _record(epoch: int, split: str, group: str, verdict: str, **fields) -> dict:
    """A hand-made record of one answer (a highly known or unknown person unless `fields` say otherwise)."""
    exact = verdict == "correct" or (verdict == "abstained" and fields.get("reference") == " I don't know")
    return {"epoch": epoch, "split": split, "group": group, "verdict": verdict, "exact_match": exact,
            "knowledge": "highly_known" if group == "known" else "unknown", "confidence": -0.5} | fields  # fmt: skip


def test_per_epoch_figures_from_hand_made_records():
    rows = [
        # Epoch 0: fine-tune set 3 known (1 right) and 1 unknown (abstained where the target abstains).
        *[_record(0, "finetune", "known", v) for v in ("correct", "hallucinated", "hallucinated")],
        _record(0, "finetune", "unknown", "abstained", reference=" I don't know"),
        # Test known: 2 highly known (right, wrong) and 2 weakly known (right, abstained); test unknown: 2 wrong.
        _record(0, "test", "known", "correct", confidence=-0.1),
        _record(0, "test", "known", "hallucinated", confidence=-0.9),
        _record(0, "test", "known", "correct", knowledge="weakly_known", confidence=-1.0),
        _record(0, "test", "known", "abstained", knowledge="weakly_known"),
        *[_record(0, "test", "unknown", "hallucinated") for _ in range(2)],
        _record(1, "finetune", "known", "correct"),
    ]
    first, second = per_epoch_figures(pd.DataFrame(rows))
    assert (first["epoch"], second["epoch"]) == (0, 1)
    assert first["finetune_exact_match"] == 0.5  # 2 of 4, each question counted once
    assert (first["finetune_known_exact_match"], first["finetune_unknown_exact_match"]) == (pytest.approx(1 / 3), 1.0)
    assert (first["test_known_accuracy"], first["test_known_hallucination_rate"]) == (0.5, 0.25)
    assert first["test_known_abstention_rate"] == 0.25
    assert (first["test_highly_known_accuracy"], first["test_weakly_known_accuracy"]) == (0.5, 0.5)
    # Of the answered known questions, the right ones had confidence -0.1 and -1.0, the wrong one -0.9: 1 of 2 pairs.
    assert first["test_known_auroc"] == 0.5
    assert first["test_unknown_hallucination_rate"] == 1.0 and first["test_unknown_auroc"] is None
    assert first["dev_known_accuracy"] is None  # no dev records
    assert second["finetune_unknown_exact_match"] is None and second["finetune_exact_match"] == 1.0


def test_the_probe_matches_each_continuation_to_its_own_fact(small_world, monkeypatch):
    """The bookkeeping of `probe_knowledge`, with continuations written to order instead of generated: person A's
    birth city is stated by every greedy continuation, person B's only by the third sample of its second opening."""
    world, _ = small_world
    a, b = world.people[:2]

    def scripted(model, tokenizer, prompts, max_new_tokens, batch_size, **sampling):
        copies = sampling.get("num_return_sequences", 1)
        out = []
        for prompt in prompts:
            for copy in range(copies):
                if "do_sample" not in sampling and prompt in sentence_openings(a.name, "birth_city"):
                    out.append(f" {a.attributes['birth_city']}.")
                elif sampling and prompt == sentence_openings(b.name, "birth_city")[1] and copy == 2:
                    out.append(f" {b.attributes['birth_city']} and more")
                else:
                    out.append(" nowhere")
        return out

    monkeypatch.setattr(probe_module, "continue_prompts", scripted)
    result = probe_module.probe_knowledge(None, _FakeTokenizer(), [a, b], num_samples=4)
    categories = {(f["person_id"], f["attribute"]): f["category"] for f in result["facts"]}
    assert categories.pop((a.person_id, "birth_city")) == "highly_known"
    assert categories.pop((b.person_id, "birth_city")) == "weakly_known"
    assert set(categories.values()) == {"unknown"}  # the other 10 facts


class _FakeTokenizer:
    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [text.split() for text in texts]}


def test_t_interval_matches_hand_computation():
    # Mean 0.4, sd 0.2 over 3 runs; t(0.975, 2 degrees of freedom) = 4.302653: half-width 4.302653 * 0.2 / sqrt(3).
    assert t_interval([0.2, 0.4, 0.6]) == pytest.approx((0.4 - 0.496827, 0.4 + 0.496827), abs=1e-5)
    assert t_interval([0.5]) is None


def test_time_breakdown_sums_each_part_over_the_conditions():
    results = {
        "timings": {"pretrain": 100.0, "probe": 5.0, "epoch0": 4.0, "finetune": 999.0, "report": 2.0},
        "conditions": [
            {"timing": {"setup": 1.0, "training": 30.0, "evaluation": 10.0, "detector": 2.0, "save": 1.0}},
            {"timing": {"setup": 2.0, "training": 20.0, "evaluation": 5.0, "detector": 1.0, "save": 0.5}},
            early_stopped(  # read off a plain run: no time of its own
                {
                    "name": "full_u0.5_n6_none",
                    "runs": [{"training_seed": 0, "per_epoch": [{"epoch": 1, "dev_known_accuracy": 0.5}]}],
                    "timing": {"setup": 9.0, "training": 9.0, "evaluation": 9.0, "detector": 9.0, "save": 9.0},
                }
            ),
        ],
    }
    assert time_breakdown(results) == [
        ("pre-training", 100.0),
        ("probe", 5.0),
        ("epoch 0 answers", 4.0),
        ("fine-tuning: setup", 3.0),
        ("fine-tuning: training", 50.0),
        ("fine-tuning: evaluation", 15.0),
        ("fine-tuning: detector", 3.0),
        ("fine-tuning: save", 1.5),
        ("results, plots and report", 2.0),
    ]


def test_a_study_over_seeds_runs_each_seed_on_its_own_world_and_gives_intervals(tmp_path):
    # One condition per seed: the thin size and the early stopping mitigation name the grid's one condition again.
    flags = ["--unknown_fractions", "0.5", "--methods", "full", "--thin_sizes", "6", "--mitigations", "early_stopping"]
    flags += ["--filtered_fractions", "0.5"]
    flags += ["--seeds", "0", "1"]
    out = run_study(tiny_args(tmp_path / "seeds", *flags))
    worlds = [
        json.loads((out / f"seed_{s}" / "pretrain" / "world" / "knowledge_base.json").read_text()) for s in (0, 1)
    ]
    assert [w["config"]["seed"] for w in worlds] == [0, 1]
    assert worlds[0]["people"][0]["name"] != worlds[1]["people"][0]["name"]
    summary = json.loads((out / "seeds.json").read_text())
    assert summary["seeds"] == [0, 1]
    entry = summary["conditions"]["full_u0.5_n6_none"]["test_known_accuracy"]
    per_seed = [
        json.loads((out / f"seed_{s}" / "results.json").read_text())["conditions"][0]["per_epoch"][-1] for s in (0, 1)
    ]
    values = [record["test_known_accuracy"] for record in per_seed]
    assert entry["values"] == {"0": values[0], "1": values[1]}
    assert entry["mean"] == pytest.approx(sum(values) / 2)
    low, high = t_interval(values)
    assert entry["interval"] == pytest.approx([max(0.0, low), min(1.0, high)])
    assert "| full_u0.5_n6_none |" in (out / "seeds.md").read_text()


@pytest.mark.learns
def test_early_stopping_read_off_the_records_is_the_checkpoint_the_trainer_keeps(study, tmp_path):
    """transformers' `load_best_model_at_end` on the fine-tune set's known answers (a figure that moves in a tiny run,
    and then ties at 1.0: the earliest best must win) keeps the epoch that `early_stopped` reads off the records."""
    world_dir, model_dir = study / "pretrain" / "world", study / "pretrain" / "model"
    rows = draw_finetune_set(load_world(world_dir), 6, 0.5, seed=0)
    sets = {"finetune_known": rows.filter(lambda g: g == "known", input_columns="group")}
    settings = dict(
        DEFAULTS, output_dir=str(tmp_path), num_train_epochs=80, per_device_train_batch_size=6, learning_rate=0.03,
        eval_strategy="epoch", save_strategy="epoch", save_total_limit=2, load_best_model_at_end=True,
        metric_for_best_model="eval_finetune_known_exact_match", greater_is_better=True, logging_steps=50,
    )  # fmt: skip
    sft_config = parse_run_config((SFTConfig,), [f"--{k}={v}" for k, v in settings.items()])[0]
    args = FinetuneArguments(model_dir=str(model_dir), world_dir=str(world_dir))
    trainer = build_trainer(
        args, sft_config, train_dataset=rows.rename_column("answer", "completion"), factuality_sets=sets
    )
    trainer.train()
    answers = [
        record
        for entry in trainer.answer_history
        for record in evaluation_records(entry["sets"], "x", 0, round(entry["epoch"]), defaultdict(lambda: "unknown"))
    ]
    per_epoch = per_epoch_figures(pd.DataFrame(answers))
    # The figures from the records are those the metric logged at each evaluation.
    logged = [e["eval_finetune_known_exact_match"] for e in trainer.state.log_history if "eval_loss" in e]
    scores = [record["finetune_known_exact_match"] for record in per_epoch]
    assert scores == logged
    assert len(set(scores)) > 1 and scores.count(max(scores)) > 1  # it moved, and its best is tied
    kept = json.loads((Path(trainer.state.best_model_checkpoint) / "trainer_state.json").read_text())
    assert best_epoch(per_epoch, criterion="finetune_known_exact_match") == round(kept["epoch"])


def test_every_figure_is_a_function_of_the_answers_on_record(study):
    results = json.loads((study / "results.json").read_text())
    answers = load_dataset("parquet", data_files=str(study / "answers.parquet"), split="train").to_pandas()
    assert len(answers) == results["records"]["rows"] and results["records"]["file"] == "answers.parquet"
    trained = [c for c in results["conditions"] if not c.get("skipped") and c["mitigation"] != "early_stopping"]
    for condition in trained:
        rows = answers[answers["condition"] == condition["name"]]
        accuracies = []
        for run in (run for run in condition["runs"] if not run.get("skipped")):
            own = rows[rows["training_seed"] == run["training_seed"]]
            assert per_epoch_figures(own) == run["per_epoch"]
            last = own[(own["epoch"] == own["epoch"].max()) & (own["split"] == "test") & (own["group"] == "known")]
            accuracies.append((last["verdict"] == "correct").mean())
        reported = results["intervals"]["conditions"][condition["name"]]["test_known_accuracy"]
        assert reported["estimate"] == pytest.approx(sum(accuracies) / len(accuracies))
        assert reported["low"] <= reported["estimate"] <= reported["high"]
    # Each record holds the world's value as well as the reference it was scored against (the abstention run's
    # fine-tune targets are "I don't know" where the probe found the fact unknown).
    world = load_world(study / "pretrain" / "world")
    values = {(p.person_id, a): v for p in world.people for a, v in p.attributes.items()}
    assert [values[key] for key in zip(answers["person_id"], answers["attribute"], strict=True)] == list(
        answers["truth"]
    )
    relabelled = answers[(answers["condition"] == "full_u0.5_n6_abstention") & (answers["reference"] == "I don't know")]
    assert len(relabelled) and (relabelled["truth"] != "I don't know").all()
    # Epoch 0 is the pre-trained model's one answer to each question, whatever the run.
    start = answers[answers["epoch"] == 0]
    assert (start.groupby("prompt")["answer"].nunique() == 1).all()
    assert set(start["prompt"]) >= set(answers.loc[answers["split"] != "finetune", "prompt"])


def test_the_causes_read_thin_sizes_at_equal_steps_and_figure_3b_at_each_filtered_share(study):
    results = json.loads((study / "results.json").read_text())
    thin = results["causes"]["thin_data"]
    # 6 and 3 questions in batches of 6: one step an epoch either way, so both train the config's 80 epochs.
    assert {(e["finetune_size"], e["point"]): e["optimizer_steps"] for e in thin} == {
        (size, point): 80 for size in (3, 6) for point in ("equal_epochs", "equal_steps", "early_stop")
    }
    figure = results["causes"]["figure_3b"]
    assert [(e["fraction_unknown"], e["point"]) for e in figure] == [
        (share, point) for share in (0.0, 0.5) for point in ("early_stop", "convergence")
    ]
    late = results["causes"]["late_change"]
    assert [e["fraction_unknown"] for e in late] == [0.0, 0.5]
    at = {(e["fraction_unknown"], e["point"]): e for e in figure}
    for e in late:  # each late harm is Figure 3b's early-stop figure minus its convergence one, and so on
        early, last = at[e["fraction_unknown"], "early_stop"], at[e["fraction_unknown"], "convergence"]
        for key, side in (("D_late_harm", "D"), ("D_without_unknown_late_harm", "D_without_unknown")):
            assert e[key]["estimate"] == pytest.approx(early[side]["estimate"] - last[side]["estimate"])
        gap_change = early["difference"]["estimate"] - last["difference"]["estimate"]
        assert e["late_harm_difference"]["estimate"] == pytest.approx(gap_change)
    report = (study / "report.md").read_text()
    assert "| unknown share | D: early stop minus convergence |" in report
    assert "- Overfitting (training on past the best dev epoch): **" in report
    assert "- Thin fine-tune data: **" in report and "![figure_3b](figure_3b.png)" in report


def test_each_mitigation_is_compared_with_the_plain_run_at_its_own_share_only(study):
    results = json.loads((study / "results.json").read_text())
    compared = {c["a"] for c in results["comparisons"] if c["question"] == "mitigation against the plain run"}
    # The set without unknowns at 0% (Figure 3b) is no mitigation of the 50% run.
    assert compared == {f"full_u0.5_n6_{m}" for m in ("early_stopping", "filter_unknown", "abstention")}


def test_the_kl_penalty_and_replay_run_as_mitigations_and_are_compared_with_the_plain_run(tmp_path):
    """Both newer mitigations fine-tune the plain condition's set with their own training, each against the plain
    run on the same test people; the KL run logs its penalty, the replay run trains on the set plus replayed text,
    and changing a mitigation's setting redoes its run only."""
    flags = ["--unknown_fractions", "0.5", "--methods", "full", "--thin_sizes", "6", "--filtered_fractions", "0.5"]
    # The tiny tokenizer's biographies run past 128 tokens: a replayed document is trained whole, with its end.
    finetune_config = tmp_path / "finetune.yaml"
    finetune_config.write_text(
        (REPO / "configs/study/finetune_tiny.yaml").read_text().replace("max_length: 128", "max_length: 512")
    )
    flags += ["--mitigations", "kl_penalty", "replay", "--training_seeds", "0", "--kl_coef", "2.0"]
    # At 128 tokens the replay run could not train them: refused once the tokenizer exists, before any fine-tuning.
    with pytest.raises(ValueError, match=r"finetune_tiny.yaml: max_length is 128, but the replay mitigation"):
        run_study(tiny_args(tmp_path / "study", *flags))
    assert (tmp_path / "study" / "pretrain" / "model").is_dir() and not (tmp_path / "study" / "conditions").exists()
    flags += ["--finetune_config", str(finetune_config)]
    out = run_study(tiny_args(tmp_path / "study", *flags))
    results = json.loads((out / "results.json").read_text())
    runs = {c["name"]: c["runs"][0] for c in results["conditions"]}
    # The replay run's six questions and round(6 x 0.25 / 0.75) replayed documents; the KL run's questions alone.
    assert [runs[f"full_u0.5_n6_{m}"]["num_trained_examples"] for m in ("replay", "kl_penalty", "none")] == [8, 6, 6]
    assert max(entry.get("kl_to_pretrained", 0) for entry in runs["full_u0.5_n6_kl_penalty"]["train_log"]) > 0
    assert not any("kl_to_pretrained" in entry for entry in runs["full_u0.5_n6_replay"]["train_log"])
    compared = {c["a"] for c in results["comparisons"] if c["question"] == "mitigation against the plain run"}
    # (The set without unknowns is empty here, the tiny probe finding every drawn fact unknown: skipped.)
    assert compared == {"full_u0.5_n6_kl_penalty", "full_u0.5_n6_replay"}
    assert (out / "mitigations.png").is_file()
    again = run_study(tiny_args(tmp_path / "study", *flags[:-3], "1.0", *flags[-2:]))
    reused = set(json.loads((again / "results.json").read_text())["reused"])
    assert "full_u0.5_n6_replay_s0" in reused and "full_u0.5_n6_kl_penalty_s0" not in reused
