"""The study, stage by stage: pre-train, probe, answer every question with the pre-trained model (epoch 0),
fine-tune every condition under each training seed, then write the records, results, plots and report.

Every stage saves its output atomically and a re-run skips what is finished: the pre-trained model when its recorded
config matches, the probe, the epoch-0 answers and each run when their files are whole and carry the key of the
settings they came from (the pre-training's config, the fine-tuning config file, the study settings they depend on),
and a run only when its saved model is there and its records file is the one it wrote. A file that does not parse,
lacks a field or has another key is redone, never trusted.

The fine-tuned model (or adapter) of the condition that does best on the dev people, from its best training seed,
is copied to `best/`. With
`seeds`, the whole study runs once per seed (world, pre-training, draws and probe), each in `seed_<S>/`, and
`seeds.md` / `seeds.json` give every figure's mean over seeds with a 95% t-interval.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import yaml
from trl import SFTConfig

from ..checkpoints import load_model_and_tokenizer, save_atomically
from ..files import staged_folder, write_json
from ..run_config import parse_run_config, run_config_sections
from ..run_folder import FINISHED_MARKER
from ..scoring import answer_questions
from ..threads import set_num_threads
from ..training.finetuning import DEFAULTS as FINETUNE_DEFAULTS
from ..training.finetuning import FinetuneArguments
from ..training.pretraining import pretrain
from ..world import ROLES, World, load_world, load_world_datasets, qa_split_name
from .causes import study_causes
from .conditions import (
    HeldOutQuestions,
    check_replay_fits,
    condition_result,
    dev_net_factuality,
    early_stopped,
    run_evaluation_epochs,
    run_finetuning,
    training_mitigation,
)
from .config import Condition, Run, StudyArguments, plan_conditions
from .detection import (
    SCORES_FILE,
    collect_detector_scores,
    detector_evidence,
    detector_settings,
    detector_stage,
    without_detectors,
)
from .findings import study_evidence
from .preflight import check_study, pretrain_configs
from .probe import probe_knowledge
from .records import read_records, write_records
from .report import write_report, write_seed_summary

RUN_FIELDS = ("training_seed", "per_epoch", "set_sizes", "saved", "records", "records_sha256")
ANSWERS_FILE = "answers.parquet"
# Settings that may differ between two runs of the same pre-training, by section of run_config.yaml: the output
# folder is the study's own `pretrain/`, wherever the study has been moved to.
VOLATILE = {"PretrainArguments": ("num_threads", "overwrite_output_dir"), "TrainingArguments": ("output_dir",)}


def _without_volatile(sections: object) -> object:
    if not isinstance(sections, dict):  # a damaged record, which matches nothing
        return sections
    return {
        name: {key: value for key, value in values.items() if key not in VOLATILE.get(name, ())}
        if isinstance(values, dict)
        else values
        for name, values in sections.items()
    }


def settings_key(*parts: object) -> str:
    """A short SHA-256 of `parts` (JSON-encoded): equal settings give equal keys."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_matching(args: StudyArguments, out_dir: Path) -> tuple[Path, str, bool]:
    """The pre-trained model folder of this study, the key of its config, and whether it was reused: it is when
    `out_dir/pretrain` holds a finished run with the same config, else it is pre-trained (again)."""
    pretrain_dir = out_dir / "pretrain"
    pretrain_args, training_args = pretrain_configs(args, out_dir)
    wanted = _without_volatile(run_config_sections(pretrain_args, training_args))
    recorded_file = pretrain_dir / "run_config.yaml"
    if (pretrain_dir / FINISHED_MARKER).is_file() and recorded_file.is_file():
        recorded = _without_volatile(yaml.safe_load(recorded_file.read_text(encoding="utf-8")))
        if recorded == wanted:
            print(f"study: pre-training: reusing {pretrain_dir / 'model'} (same config)")
            return pretrain_dir, settings_key(wanted), True
        print(f"study: pre-training: {pretrain_dir} holds another config; pre-training again")
    pretrain_args.overwrite_output_dir = True
    pretrain(pretrain_args, training_args)
    return pretrain_dir, settings_key(wanted), False


def load_stage(path: Path, key: str) -> dict | None:
    """A finished stage's saved result, or None when the file is missing, does not parse or has another key."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("key") == key else None


def load_run(path: Path, key: str) -> dict | None:
    """A finished run's result, or None when the file is missing, does not parse, has another key, lacks a field,
    its saved model is gone or its records file is not the one it wrote (see `records.read_records`)."""
    result = load_stage(path, key)
    if result is None or not all(field in result for field in RUN_FIELDS):
        return None
    if result.get("skipped"):
        return result
    # `saved` is relative to the study's output folder, three levels above conditions/<name>/seed_<S>.json.
    study_dir = path.parent.parent.parent
    if not result["per_epoch"] or not result["saved"] or not (study_dir / result["saved"]).is_dir():
        return None
    if read_records(study_dir / result["records"], result["records_sha256"]) is None:
        return None
    return result


def publish_best(conditions: list[dict], out_dir: Path) -> dict | None:
    """Publish the fine-tuned model of the condition with the best `dev_net_factuality` (averaged over its training
    seeds), from its run (seed) with the best, as `out_dir/best/model` (a LoRA run's adapter merged into the
    pre-trained model, so the folder stands alone, and the adapter itself in `best/adapter`), with
    `best/condition.json` saying which condition and seed it is and why. The new `best/` replaces the old only once
    complete. Returns that record, or None when no condition saved a model."""
    trained = [c for c in conditions if c.get("saved")]
    if not trained:
        return None
    best = max(trained, key=dev_net_factuality)
    run = max((r for r in best["runs"] if r.get("saved")), key=dev_net_factuality)
    saved = out_dir / run["saved"]
    record = {
        "name": best["name"],
        "training_seed": run["training_seed"],
        "criterion": "dev_net_factuality: (correct - hallucinated) / questions on the dev people, last epoch; the "
        "condition's mean over its training seeds, then its best seed",
        "dev_net_factuality": dev_net_factuality(best),
        "run_dev_net_factuality": dev_net_factuality(run),
        "folders": ["model", "adapter"] if best["method"] == "lora" else ["model"],
    }
    with staged_folder(out_dir / "best") as staging:
        if best["method"] == "lora":
            shutil.copytree(saved, staging / "adapter")
            merged, tokenizer = load_model_and_tokenizer(out_dir / "pretrain" / "model", saved)
            save_atomically(staging / "model", merged, tokenizer)
        else:
            shutil.copytree(saved, staging / "model")
        write_json(record, staging / "condition.json")
    print(
        f"study: best condition on dev: {best['name']} (net factuality {record['dev_net_factuality']:.2f}), training "
        f"seed {run['training_seed']}; in best/"
    )
    return record


def run_study(args: StudyArguments) -> Path:
    """Run (or finish) the study of `args`; returns the output folder, which holds `results.json`, `report.md` and
    the plots (with `seeds`: one such folder per seed, `seed_<S>/`, and `seeds.json` and `seeds.md`)."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("The study runs in one process: start it with python, not accelerate launch")
    out_dir = Path(args.output_dir)
    check_study(args)  # now, rather than after minutes of pre-training
    if args.overwrite_output_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    args.num_threads = set_num_threads(args.num_threads)
    if not args.seeds:
        return _run_one(args, out_dir)
    runs = {}
    for number, seed in enumerate(args.seeds, start=1):
        print(f"study: seed {seed} ({number} of {len(args.seeds)})", flush=True)
        one = dataclasses.replace(args, seed=seed, output_dir=str(out_dir / f"seed_{seed}"), overwrite_output_dir=False)
        runs[seed] = json.loads((_run_one(one, Path(one.output_dir)) / "results.json").read_text(encoding="utf-8"))
    write_seed_summary(runs, out_dir)
    print(f"study: wrote seeds.json and seeds.md over {len(runs)} seeds in {out_dir}")
    return out_dir


def probe_stage(
    args: StudyArguments, out_dir: Path, pretrain_dir: Path, pretrain_key: str, world: World
) -> tuple[dict, bool]:
    """Stage 2: what the pre-trained model knows of every known and unknown person (see `probe_knowledge`), saved
    as `probe.json` with its settings key; returns it and whether it was reused from an earlier run."""
    probe_file = out_dir / "probe.json"
    probe_key = settings_key(pretrain_key, args.probe_samples, args.probe_temperature, args.seed)
    probe = load_stage(probe_file, probe_key)
    if probe is not None:
        print(f"study: stage 2/5, probe: reusing {probe_file}")
        return probe, True
    print("study: stage 2/5, probing what the pre-trained model knows", flush=True)
    model, tokenizer = load_model_and_tokenizer(pretrain_dir / "model")
    people = world.people_in("known") + world.people_in("unknown")
    probe = probe_knowledge(model, tokenizer, people, args.probe_samples, args.probe_temperature, seed=args.seed)
    probe["key"] = probe_key
    write_json(probe, probe_file)
    return probe, False


def epoch0_stage(
    args: StudyArguments, out_dir: Path, pretrain_dir: Path, pretrain_key: str
) -> tuple[dict[str, tuple[str, float]], str, bool]:
    """Stage 3: the pre-trained model's answer and confidence to every question a run can ask (the fine-tune and
    held-out people's, known and unknown), generated once as each evaluation generates them and shared by every run
    as its epoch 0; saved as `epoch0.json`. Returns prompt -> (answer, confidence), its settings key and whether it
    was reused."""
    path = out_dir / "epoch0.json"
    _, sft_config = parse_run_config((FinetuneArguments, SFTConfig), [args.finetune_config], FINETUNE_DEFAULTS, {})
    key = settings_key(pretrain_key, sft_config.per_device_eval_batch_size)
    saved = load_stage(path, key)
    if saved is not None and isinstance(saved.get("answers"), dict):
        print(f"study: stage 3/5, epoch 0: reusing {path}")
        return {prompt: tuple(answer) for prompt, answer in saved["answers"].items()}, key, True
    print("study: stage 3/5, epoch 0: the pre-trained model answers every question", flush=True)
    splits = load_world_datasets(pretrain_dir / "world")
    prompts = [
        p for group in ("known", "unknown") for role in ROLES for p in splits[qa_split_name(group, role)]["prompt"]
    ]
    model, tokenizer = load_model_and_tokenizer(pretrain_dir / "model")
    answers, confidences = answer_questions(
        model, tokenizer, prompts, sft_config.per_device_eval_batch_size, progress="epoch 0"
    )
    epoch0 = {
        prompt: (answer, confidence) for prompt, answer, confidence in zip(prompts, answers, confidences, strict=True)
    }
    write_json({"key": key, "answers": epoch0}, path)
    return epoch0, key, False


def conditions_stage(
    args: StudyArguments,
    out_dir: Path,
    pretrain_dir: Path,
    world: World,
    probe: dict,
    epoch0: tuple[dict, str],
    conditions: list[Condition] | None = None,
) -> tuple[dict[Condition, dict], list[str]]:
    """Stage 4: every planned condition (`conditions`, default `plan_conditions(args)`) under every training seed,
    each run fine-tuned unless `conditions/<name>/seed_<S>.json` holds its finished result under the same settings
    key (with its records file whole), and judged by the detectors where `args.judged_by_detectors` (`detector_stage`);
    `epoch0` is `epoch0_stage`'s answers and key. Returns the results by condition (`conditions.condition_result`) and
    the names of the runs reused."""
    epoch0_answers, epoch0_key = epoch0
    held_out = HeldOutQuestions.load(pretrain_dir / "world")
    planned = plan_conditions(args) if conditions is None else conditions
    results: dict[Condition, dict] = {}
    reused = []
    finetune_config = Path(args.finetune_config).read_text(encoding="utf-8")
    for number, condition in enumerate(planned, start=1):
        runs = []
        for run in (Run(condition, seed) for seed in args.training_seeds):
            path = out_dir / f"{run.folder}.json"
            # The run's own schedule: a thin set's depends on finetune_size and the batch (`run_evaluation_epochs`).
            schedule = run_evaluation_epochs(run, args, pretrain_dir)
            key_parts = [probe["key"], finetune_config, schedule, args.lora_learning_rate, run.name, epoch0_key]
            # A mitigation's own settings (KL weight, replayed share) only where it has them: other runs keep the keys
            # they had before these mitigations existed.
            mitigation = training_mitigation(condition, args)
            key = settings_key(*key_parts, *([mitigation] if mitigation else []))
            result = load_run(path, key)
            where = f"condition {number}/{len(planned)}, training seed {run.training_seed}"
            if result is None:
                print(f"study: stage 4/5, {where}: {condition.name}", flush=True)
                # The old file goes first: a crash before the new one is written must not pair it with the new model.
                path.unlink(missing_ok=True)
                result, records = run_finetuning(run, args, pretrain_dir, world, probe, held_out, epoch0_answers)
                result |= {"records": None, "records_sha256": None}  # a skipped run has none
                if records:
                    records_path = out_dir / f"{run.folder}.parquet"
                    result["records"] = records_path.relative_to(out_dir).as_posix()
                    result["records_sha256"] = write_records(records, records_path)
                write_json({**result, "key": key}, path)
            else:
                print(f"study: stage 4/5, {where}: {condition.name} (done before)")
                reused.append(run.name)
            if args.judged_by_detectors(condition):
                detector_key = settings_key(key, *detector_settings(args))
                result = detector_stage(run, result, (key, detector_key), args, out_dir, pretrain_dir)
            else:  # a run an earlier study's detectors judged keeps their files, out of this study's figures and time
                result = without_detectors(result)
            runs.append(result)
        results[condition] = condition_result(condition, runs)
    return results, reused


def collect_records(conditions: list[dict], out_dir: Path) -> tuple[pd.DataFrame, int]:
    """Every run's records in one table, written as `answers.parquet` in `out_dir` (through a staging file);
    returns the table and the file's size in bytes."""
    frames = [
        read_records(out_dir / run["records"], run["records_sha256"])
        for condition in conditions
        for run in condition["runs"]
        if not run.get("skipped")
    ]
    records = pd.concat(frames, ignore_index=True)
    write_records(records.to_dict("records"), out_dir / ANSWERS_FILE)
    return records, (out_dir / ANSWERS_FILE).stat().st_size


def _run_one(args: StudyArguments, out_dir: Path) -> Path:
    timings, reused = {}, []  # reused: stages and conditions taken from an earlier run, whose time is not this run's
    start = time.perf_counter()
    print("study: stage 1/5, pre-training", flush=True)
    pretrain_dir, pretrain_key, pretrain_reused = pretrain_matching(args, out_dir)
    check_replay_fits(args, pretrain_dir)  # the first moment it can be: the tokenizer is the pre-training's
    reused += ["pretrain"] if pretrain_reused else []
    timings["pretrain"] = time.perf_counter() - start

    start = time.perf_counter()
    world = load_world(pretrain_dir / "world")
    probe, probe_reused = probe_stage(args, out_dir, pretrain_dir, pretrain_key, world)
    reused += ["probe"] if probe_reused else []
    timings["probe"] = time.perf_counter() - start

    start = time.perf_counter()
    *epoch0, epoch0_reused = epoch0_stage(args, out_dir, pretrain_dir, pretrain_key)
    reused += ["epoch0"] if epoch0_reused else []
    timings["epoch0"] = time.perf_counter() - start

    start = time.perf_counter()
    results, reused_runs = conditions_stage(args, out_dir, pretrain_dir, world, probe, tuple(epoch0))
    reused += reused_runs
    conditions = list(results.values())
    if "early_stopping" in args.mitigations:
        conditions.append(early_stopped(results[args.plain()]))
    best = publish_best(list(results.values()), out_dir)
    timings["finetune"] = time.perf_counter() - start

    start = time.perf_counter()
    print("study: stage 5/5, records, intervals, plots and report", flush=True)
    records, records_size = collect_records(list(results.values()), out_dir)
    scores = collect_detector_scores(list(results.values()), out_dir)
    results_json = {
        "config": run_config_sections(args)["StudyArguments"],
        "probe": {"agreement": probe["agreement"]},
        "records": {"file": ANSWERS_FILE, "rows": len(records), "bytes": records_size},
        "detector_scores": {"file": SCORES_FILE, "rows": len(scores)},
        "detectors": detector_evidence(scores),
        **study_evidence(conditions, records, args),
        "causes": study_causes(conditions, records, args),
        "conditions": conditions,
        "best": best,
        "timings": timings,
        "reused": reused,
    }
    write_report(results_json, out_dir)
    timings["report"] = time.perf_counter() - start
    write_json(results_json, out_dir / "results.json")
    print("study: seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"study: wrote results.json, report.md and plots in {out_dir}")
    return out_dir


__all__ = [
    "ANSWERS_FILE",
    "collect_records",
    "conditions_stage",
    "epoch0_stage",
    "load_run",
    "load_stage",
    "pretrain_matching",
    "probe_stage",
    "publish_best",
    "run_study",
    "settings_key",
]
