"""The regime sweep's bookkeeping: its regimes and their configs, fitted and early-stopping epochs, the late harm
from hand-made records, the pick, and a real tiny sweep on the session's tiny pre-training (reused, as a sweep
reuses its own), resumed without fine-tuning again."""

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from modeling.run_config import parse_run_config
from modeling.study import SweepArguments, mitigation_settings, run_sweep
from modeling.study import runner as study_runner
from modeling.study.config import Condition, StudyArguments
from modeling.study.mitigation_settings import pick_settings
from modeling.study.sweep import (
    Regime,
    fitted_at_end,
    fitted_epoch,
    pick_regimes,
    regime_summary,
    run_summary,
    write_regime_config,
)

REPO = Path(__file__).resolve().parents[1]


def tiny_sweep_args(out: Path, *flags: str) -> SweepArguments:
    """A sweep on the tiny study's pre-training, probe and fine-tuning config (tests/helpers.py `tiny_args`), with
    two KL weights; replay only where `flags` ask (the tiny world's documents are longer than that config's
    max_length, so a replay run cannot train them)."""
    argv = ["--output_dir", str(out), "--pretrain_config", str(REPO / "configs" / "tiny.yaml")]
    argv += ["--finetune_config", str(REPO / "configs" / "study" / "finetune_tiny.yaml"), "--finetune_size", "6"]
    argv += ["--full_learning_rates", "0.03", "--lora_learning_rates", "0.03", "--batch_sizes", "6"]
    argv += ["--eval_epochs", "10", "20", "40", "--probe_samples", "2", "--kl_coefs", "0.5", "2", *flags]
    args = parse_run_config((SweepArguments,), argv)[0]
    return args if "--replay_fractions" in flags else dataclasses.replace(args, replay_fractions=[])


def test_regimes_are_every_method_batch_and_rate_and_each_config_changes_only_those(tmp_path):
    args = tiny_sweep_args(tmp_path, "--batch_sizes", "6", "3", "--full_learning_rates", "0.03", "0.01")
    assert [r.name for r in args.regimes()] == [
        "full_lr0.03_b6", "full_lr0.01_b6", "full_lr0.03_b3", "full_lr0.01_b3", "lora_lr0.03_b6", "lora_lr0.03_b3",
    ]  # fmt: skip
    path = write_regime_config(args, Regime("lora", 0.01, 3), tmp_path / "regime")
    written = yaml.safe_load(path.read_text())
    base = yaml.safe_load((REPO / "configs" / "study" / "finetune_tiny.yaml").read_text())
    assert written == base | {"learning_rate": 0.01, "per_device_train_batch_size": 3, "num_train_epochs": 40}
    assert base["learning_rate"] != 0.01 and base["num_train_epochs"] != 40  # so the override shows


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--methods", "qlora"), r"methods has \['qlora'\]"),
        (("--batch_sizes", "0"), "batch_sizes must be positive"),
        (("--lora_learning_rates", "-0.1"), "learning rates must be positive"),
        (("--eval_epochs", "20", "10"), r"eval_epochs is \[20, 10\]; allowed: increasing epochs"),
        (("--fraction_unknown", "1.5"), r"is 1.5; allowed: a share of unknown facts in \[0, 1\]"),
        (("--kl_coefs", "1", "0"), r"kl_coef is 0.0; allowed: a positive weight"),
        (("--replay_fractions", "1"), r"replay_fraction is 1.0; allowed: a share in \(0, 1\)"),
        (("--methods", "lora"), r"tried in full fine-tuning's pick: add 'full' to methods"),
    ],
)
def test_bad_sweep_settings_are_refused_when_parsed(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        tiny_sweep_args(tmp_path / "out", *flags)
    assert not (tmp_path / "out").exists()


def test_a_sweep_without_a_regime_is_refused():
    with pytest.raises(ValueError, match="plans no regime"):
        SweepArguments(methods=["lora"], lora_learning_rates=[])


def test_fitted_epoch_is_the_first_evaluated_epoch_at_the_fitted_share():
    per_epoch = [{"epoch": e, "finetune_known_exact_match": s} for e, s in ((0, 0.5), (2, 0.94), (4, 0.95), (8, 1.0))]
    assert fitted_epoch(per_epoch, "known") == 4  # 0.95 counts, 0.94 does not
    assert fitted_epoch(per_epoch, "unknown") is None  # no such examples
    assert fitted_epoch(per_epoch[:2], "known") is None


def _regime_records() -> tuple[dict, pd.DataFrame]:
    """A regime of two seeds and three epochs, with dev and test known people whose answers are written to order.

    Seed 0's dev accuracy peaks at epoch 1, seed 1's at epoch 2. On the four test people, seed 0 answers all right
    at epoch 1 and half at epoch 2; seed 1 half at epoch 1 and all at epoch 2. So the test accuracy at early stop is
    1.0 for both seeds, at convergence (epoch 2) 0.5 and 1.0: late harm (0.5 + 0.0) / 2 = 0.25."""
    dev = {0: {1: [1, 1], 2: [1, 0]}, 1: {1: [1, 0], 2: [1, 1]}}
    test = {0: {1: [1, 1, 1, 1], 2: [1, 1, 0, 0]}, 1: {1: [1, 1, 0, 0], 2: [1, 1, 1, 1]}}
    fitted = {0: ([0.5, 0.96, 1.0], [0.0, 0.5, 0.94]), 1: ([0.5, 1.0, 1.0], [0.0, 0.95, 1.0])}
    rows, runs = [], []
    for seed in (0, 1):
        for split, people, by_epoch in (("dev", (11, 12), dev[seed]), ("test", (1, 2, 3, 4), test[seed])):
            for epoch, rights in by_epoch.items():
                rows += [
                    {
                        "condition": "full_u0.5_n4_none",
                        "training_seed": seed,
                        "epoch": epoch,
                        "split": split,
                        "group": "known",
                        "person_id": person,
                        "verdict": "correct" if right else "hallucinated",
                        "exact_match": bool(right),
                    }  # fmt: skip
                    for person, right in zip(people, rights, strict=True)
                ]
        per_epoch = [
            {
                "epoch": e,
                "finetune_known_exact_match": fitted[seed][0][e],
                "finetune_unknown_exact_match": fitted[seed][1][e],
                "dev_known_accuracy": sum(dev[seed].get(e, [0])) / 2,
                "test_known_accuracy": sum(test[seed].get(e, [0])) / 4,
            }  # fmt: skip
            for e in (0, 1, 2)
        ]
        runs.append(
            {"training_seed": seed, "per_epoch": per_epoch, "seconds": 10.0 + seed, "timing": {"training": 8.0}}
        )
    condition = {"name": "full_u0.5_n4_none", "mitigation": "none", "runs": runs, "per_epoch": runs[0]["per_epoch"]}
    return condition, pd.DataFrame(rows)


def test_regime_summary_reads_early_stop_convergence_and_late_harm_off_hand_made_records():
    condition, records = _regime_records()
    summary = regime_summary(Regime("full", 3e-4, 16), condition, records)
    assert summary["regime"] == "full_lr0.0003_b16" and summary["learning_rate"] == 3e-4
    assert [run["early_stop_epoch"] for run in summary["runs"]] == [1, 2]
    assert [run["fitted_epoch"] for run in summary["runs"]] == [
        {"known": 1, "unknown": None},
        {"known": 1, "unknown": 1},
    ]
    assert not summary["converged"] and not summary["room"]  # seed 0 never fitted its unknown examples
    assert summary["dev_early_stop_accuracy"] == 1.0
    test = summary["test_known_accuracy"]
    assert test["early_stop"]["estimate"] == 1.0 and test["convergence"]["estimate"] == 0.75
    assert test["late_harm"]["estimate"] == pytest.approx(0.25)
    # Resampling people and seeds: seed 0 alone with persons 3 and 4 would give a harm of 1.
    assert 0 <= test["late_harm"]["low"] <= 0.25 <= test["late_harm"]["high"] <= 1
    dev = summary["dev_known_accuracy"]  # seed 0: 1.0 then 0.5; seed 1: 1.0 at both its stop and its last epoch
    assert dev["late_harm"]["estimate"] == pytest.approx(0.25)
    assert summary["runs"][0]["early_stop"]["finetune_unknown_exact_match"] == 0.5


def _summary(name: str, batch: int, converged: bool, room: bool, dev: float, rate: float = 1e-3) -> dict:
    method = name.split("_")[0]
    return {"regime": name, "method": method, "batch_size": batch, "learning_rate": rate, "converged": converged,
            "room": room, "dev_early_stop_accuracy": dev}  # fmt: skip


def test_the_pick_follows_the_rule_and_says_what_it_relaxed():
    summaries = [
        _summary("lora_d", 16, True, False, 0.4),  # LoRA listed first: full fine-tuning is still picked first
        _summary("lora_e", 64, True, True, 0.6),  # meets the rule, at a batch size the study cannot share
        _summary("full_a", 16, True, True, 0.5),
        _summary("full_b", 64, True, False, 0.9),  # better on dev, but no room for early stopping
        _summary("full_c", 64, False, False, 0.95),  # not fitted at its last epoch
    ]
    assert pick_regimes(summaries) == {
        "full": {"regime": "full_a", "batch_size": 16, "relaxed": None, "tied": []},
        "lora": {"regime": "lora_d", "batch_size": 16, "relaxed": "room", "tied": []},
    }
    unconverged = [_summary("full_x", 16, False, False, 0.2), _summary("full_y", 16, False, False, 0.3)]
    assert pick_regimes(unconverged)["full"]["relaxed"] == "room and fitting"
    # No LoRA regime at full fine-tuning's batch: LoRA is picked at another, and says so.
    other_batch = [_summary("full_a", 16, True, True, 0.5), _summary("lora_e", 64, True, True, 0.6)]
    assert pick_regimes(other_batch)["lora"] == {"regime": "lora_e", "batch_size": 64, "relaxed": "batch", "tied": []}


def test_a_tie_on_dev_goes_to_the_larger_batch_then_the_lower_learning_rate():
    # 37/138 as two sums in another order: equal counts, unequal floats in the last bit.
    a, b = (35 / 138 + 39 / 138) / 2, (37 / 138 + 37 / 138) / 2
    assert a != b and abs(a - b) < 1e-12
    summaries = [
        _summary("full_small_batch", 16, True, True, max(a, b), 3e-4),
        _summary("full_fast", 64, True, True, min(a, b), 1e-3),
        _summary("full_slow", 64, True, True, min(a, b), 1e-4),
        _summary("full_worse", 64, True, True, min(a, b) - 0.01, 1e-5),
    ]
    pick = pick_regimes(summaries)["full"]
    assert pick["regime"] == "full_slow" and sorted(pick["tied"]) == ["full_fast", "full_small_batch"]


def _setting(setting: str, value: float, dev: float) -> dict:
    return {"setting": setting, "value": value, "dev_known_accuracy": dev}


def test_each_mitigation_setting_is_picked_on_dev_and_a_tie_goes_to_the_smaller_value():
    a, b = (35 / 138 + 39 / 138) / 2, (37 / 138 + 37 / 138) / 2  # one accuracy, two floats
    summaries = [
        _setting("kl_coef", 3.0, 0.30),
        _setting("kl_coef", 0.1, 0.20),
        _setting("kl_coef", 1.0, 0.35),  # the best
        _setting("replay_fraction", 0.5, max(a, b)),
        _setting("replay_fraction", 0.25, min(a, b)),  # tied, and smaller
        _setting("replay_fraction", 0.1, min(a, b) - 0.01),
    ]
    assert pick_settings(summaries) == {
        "kl_coef": {"value": 1.0, "tied": []},
        "replay_fraction": {"value": 0.25, "tied": [0.5]},
    }
    assert pick_settings([]) == {}


def test_each_setting_trains_its_own_mitigation_at_its_value_and_the_sweeps_share(monkeypatch, tmp_path):
    seen = []

    def stage(trial, folder, *stages, conditions):  # what each value's fine-tuning is given
        seen.append((conditions, trial.mitigations, trial.kl_coef, trial.replay_fraction, folder.name))
        return {conditions[0]: {}}, []

    monkeypatch.setattr(mitigation_settings, "conditions_stage", stage)
    monkeypatch.setattr(mitigation_settings, "collect_records", lambda conditions, folder: (None, 0))
    monkeypatch.setattr(mitigation_settings, "setting_summary", lambda *args: args[:2])
    args = tiny_sweep_args(tmp_path, "--fraction_unknown", "0.25")
    study = args.study(args.finetune_config, tmp_path / "pick")
    values = [("kl_coef", 0.5), ("replay_fraction", 0.1)]
    assert mitigation_settings.run_settings(values, study, tmp_path, (None,) * 4) == values
    defaults = StudyArguments(finetune_config=args.finetune_config)
    assert seen == [
        ([Condition(0.25, "full", "kl_penalty", 6)], ["kl_penalty"], 0.5, defaults.replay_fraction, "kl_coef_0.5"),
        ([Condition(0.25, "full", "replay", 6)], ["replay"], defaults.kl_coef, 0.1, "replay_fraction_0.1"),
    ]


def test_the_studys_mitigation_settings_are_the_committed_sweeps_picks():
    picks = json.loads((REPO / "docs" / "sweep" / "sweep.json").read_text())["setting_picks"]
    defaults = StudyArguments()
    assert {setting: pick["value"] for setting, pick in picks.items()} == {
        "kl_coef": defaults.kl_coef,
        "replay_fraction": defaults.replay_fraction,
    }


def test_a_run_counts_as_converged_only_if_fitted_at_its_last_epoch():
    per_epoch = [
        {"epoch": e, "dev_known_accuracy": 0.1, "test_known_accuracy": 0.1, "finetune_known_exact_match": k,
         "finetune_unknown_exact_match": u}
        for e, k, u in ((0, 0.3, 0.0), (4, 1.0, 0.96), (8, 0.94, 0.99))
    ]  # fmt: skip
    summary = run_summary({"training_seed": 0, "per_epoch": per_epoch, "seconds": 1.0, "timing": {"training": 1.0}})
    assert summary["fitted_epoch"] == {"known": 4, "unknown": 4} and not summary["fitted_at_end"]  # un-fitted at 8
    assert fitted_at_end([{"finetune_known_exact_match": 1.0, "finetune_unknown_exact_match": None}], "unknown")


def test_a_tiny_sweep_reuses_the_pre_training_writes_every_regime_and_resumes(study, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    out.mkdir()
    for shared in ("pretrain", "probe.json", "epoch0.json"):  # the tiny study's, under the same settings
        (shutil.copytree if (study / shared).is_dir() else shutil.copy)(study / shared, out / shared)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a shared stage ran again")

    for stage in ("pretrain", "probe_knowledge", "answer_questions"):
        monkeypatch.setattr(study_runner, stage, must_not_run)
    trained, run_finetuning = [], study_runner.run_finetuning

    def recording(run, args, *rest):  # what each fine-tuning was given
        trained.append((run.condition.mitigation, args.kl_coef, args.replay_fraction, Path(args.finetune_config)))
        return run_finetuning(run, args, *rest)

    monkeypatch.setattr(study_runner, "run_finetuning", recording)
    args = tiny_sweep_args(out, "--training_seeds", "0", "1")
    run_sweep(args)
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["regime"] for r in sweep["regimes"]] == ["full_lr0.03_b6", "lora_lr0.03_b6"]
    assert (out / "sweep.png").stat().st_size > 0
    assert sweep["picks"] == pick_regimes(sweep["regimes"])  # the pick is a function of what the file holds
    for regime in sweep["regimes"]:
        folder = out / "regimes" / regime["regime"]
        assert yaml.safe_load((folder / "finetune.yaml").read_text())["learning_rate"] == regime["learning_rate"]
        assert [r["epoch"] for r in regime["per_epoch"]] == [0, 10, 20, 40]
        _check_late_harm_from_records(regime, pd.read_parquet(folder / "answers.parquet"))
        ends = [run["convergence"] for run in regime["runs"]]
        fitted = all(end[f"finetune_{g}_exact_match"] >= 0.95 for end in ends for g in ("known", "unknown"))
        assert regime["converged"] == fitted and (regime["test_known_accuracy"]["late_harm_verdict"] is None) != fitted
    assert "| full_lr0.03_b6 |" in (out / "sweep.md").read_text()
    _check_mitigation_settings(sweep, out, trained)

    monkeypatch.setattr(study_runner, "run_finetuning", must_not_run)
    run_sweep(tiny_sweep_args(out, "--training_seeds", "0", "1"))  # every run is on file: nothing trains
    again = json.loads((out / "sweep.json").read_text())
    assert again["regimes"] == sweep["regimes"] and again["mitigation_settings"] == sweep["mitigation_settings"]


def _check_mitigation_settings(sweep: dict, out: Path, trained: list[tuple]) -> None:
    """Each KL weight was trained (both seeds) in full fine-tuning's pick with that value and its mitigation, its
    dev accuracy is the records', and the pick is a function of the file."""
    pick_config = out / "regimes" / sweep["picks"]["full"]["regime"] / "finetune.yaml"
    tried = [(s["setting"], s["value"]) for s in sweep["mitigation_settings"]]
    assert tried == [("kl_coef", 0.5), ("kl_coef", 2.0)]
    mitigation_runs = [t for t in trained if t[0] != "none"]
    kl_runs = [(m, kl, path) for m, kl, _, path in mitigation_runs]
    assert kl_runs == [("kl_penalty", kl, pick_config) for kl in (0.5, 0.5, 2.0, 2.0)]
    for summary in sweep["mitigation_settings"]:
        folder = out / "mitigations" / f"{summary['setting']}_{summary['value']:g}"
        records = pd.read_parquet(folder / "answers.parquet")
        dev = records[(records["split"] == "dev") & (records["group"] == "known")]
        last = dev[dev["epoch"] == dev["epoch"].max()]
        per_seed = last.groupby("training_seed")["verdict"].apply(lambda v: (v == "correct").mean())
        assert sorted(per_seed.index) == [0, 1] and last["epoch"].iloc[0] == 40
        assert summary["dev_known_accuracy"] == pytest.approx(per_seed.mean())
        assert summary["dev_known_accuracy_interval"]["estimate"] == pytest.approx(per_seed.mean())
    assert sweep["setting_picks"] == pick_settings(sweep["mitigation_settings"])
    assert (out / "mitigation_settings.png").stat().st_size > 0
    report = (out / "sweep.md").read_text()
    assert "| kl_penalty | kl_coef 0.5 |" in report and "| kl_penalty | kl_coef 2 |" in report


def test_a_sweep_whose_replayed_documents_do_not_fit_stops_before_any_fine_tuning(study, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    shutil.copytree(study / "pretrain", out / "pretrain")  # the tiny study's, under the same settings

    def must_not_run(*args, **kwargs):
        raise AssertionError("fine-tuned")

    monkeypatch.setattr(study_runner, "run_finetuning", must_not_run)
    with pytest.raises(ValueError, match=r"finetune_tiny.yaml: max_length is 128, but the replay mitigation"):
        run_sweep(tiny_sweep_args(out, "--replay_fractions", "0.25"))
    assert not list(out.rglob("conditions")) and not (out / "probe.json").exists()


def _check_late_harm_from_records(regime: dict, records: pd.DataFrame) -> None:
    """The late harm's estimate, recomputed from the regime's answers: per seed, the test known accuracy at its
    early-stopping epoch minus at its last, averaged over the seeds."""
    test = records[(records["split"] == "test") & (records["group"] == "known")]
    harms = []
    for run in regime["runs"]:
        rows = test[test["training_seed"] == run["training_seed"]]
        accuracy = rows.groupby("epoch")["verdict"].apply(lambda v: (v == "correct").mean())
        harms.append(accuracy[run["early_stop_epoch"]] - accuracy[run["last_epoch"]])
    assert regime["test_known_accuracy"]["late_harm"]["estimate"] == pytest.approx(sum(harms) / len(harms))
