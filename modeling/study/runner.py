"""The study, stage by stage: pre-train, probe, fine-tune every condition, then write results, plots and report.

Every stage saves its output atomically and a re-run skips what is finished: the pre-trained model when its recorded
config matches, the probe and each condition when their files are whole and carry the key of the settings they came
from (the pre-training's config, the fine-tuning config file, the study settings they depend on). A file that does
not parse, lacks a field or has another key is redone, never trusted.
"""

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import yaml
from transformers import TrainingArguments

from ..checkpoints import load_model_and_tokenizer
from ..pretraining import DEFAULTS as PRETRAIN_DEFAULTS
from ..pretraining import PretrainArguments, pretrain
from ..run_config import parse_run_config, run_config_sections
from ..run_folder import FINISHED_MARKER
from ..scoring import write_json
from ..threads import set_num_threads
from ..world import load_world
from .conditions import early_stopped, heldout_splits, run_condition
from .config import Condition, StudyArguments, plan_conditions
from .probe import probe_knowledge
from .report import write_report

CONDITION_FIELDS = (
    "name",
    "fraction_unknown",
    "method",
    "mitigation",
    "finetune_size",
    "per_epoch",
    "set_sizes",
    "detector",
)
# Settings that may differ between two runs of the same pre-training.
VOLATILE = ("num_threads", "overwrite_output_dir")


def settings_key(*parts: object) -> str:
    """A short SHA-256 of `parts` (JSON-encoded): equal settings give equal keys."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def pretrain_matching(args: StudyArguments, out_dir: Path) -> tuple[Path, str]:
    """The pre-trained model folder of this study and the key of its config: reused when `out_dir/pretrain` holds a
    finished run with the same config, else pre-trained (again)."""
    pretrain_dir = out_dir / "pretrain"
    argv = [args.pretrain_config, "--output_dir", str(pretrain_dir)]
    pretrain_args, training_args = parse_run_config((PretrainArguments, TrainingArguments), argv, PRETRAIN_DEFAULTS)
    wanted = run_config_sections(pretrain_args, training_args)
    for key in VOLATILE:
        wanted["PretrainArguments"].pop(key, None)
    recorded_file = pretrain_dir / "run_config.yaml"
    if (pretrain_dir / FINISHED_MARKER).is_file() and recorded_file.is_file():
        recorded = yaml.safe_load(recorded_file.read_text(encoding="utf-8"))
        for key in VOLATILE:
            recorded.get("PretrainArguments", {}).pop(key, None)
        if recorded == wanted:
            print(f"study: pre-training: reusing {pretrain_dir / 'model'} (same config)")
            return pretrain_dir, settings_key(wanted)
        print(f"study: pre-training: {pretrain_dir} holds another config; pre-training again")
    pretrain_args.overwrite_output_dir = True
    pretrain(pretrain_args, training_args)
    return pretrain_dir, settings_key(wanted)


def load_stage(path: Path, key: str) -> dict | None:
    """A finished stage's saved result, or None when the file is missing, does not parse or has another key."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) and result.get("key") == key else None


def load_condition(path: Path, key: str) -> dict | None:
    """A finished condition's result, or None when the file is missing, does not parse, has another key or lacks a
    field."""
    result = load_stage(path, key)
    if result is None or not all(field in result for field in CONDITION_FIELDS):
        return None
    if not result["per_epoch"] and not result.get("skipped"):
        return None
    return result


def run_study(args: StudyArguments) -> Path:
    """Run (or finish) the study of `args`; returns the output folder, which holds `results.json`, `report.md` and
    the plots."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        raise ValueError("The study runs in one process: start it with python, not accelerate launch")
    out_dir = Path(args.output_dir)
    if args.overwrite_output_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    args.num_threads = set_num_threads(args.num_threads)
    timings = {}

    start = time.perf_counter()
    print("study: stage 1/4, pre-training", flush=True)
    pretrain_dir, pretrain_key = pretrain_matching(args, out_dir)
    timings["pretrain"] = time.perf_counter() - start

    start = time.perf_counter()
    world = load_world(pretrain_dir / "world")
    probe_file = out_dir / "probe.json"
    probe_key = settings_key(pretrain_key, args.probe_samples, args.probe_temperature, args.seed)
    probe = load_stage(probe_file, probe_key)
    if probe is not None:
        print(f"study: stage 2/4, probe: reusing {probe_file}")
    else:
        print("study: stage 2/4, probing what the pre-trained model knows", flush=True)
        model, tokenizer = load_model_and_tokenizer(pretrain_dir / "model")
        people = world.people_in("known") + world.people_in("unknown")
        probe = probe_knowledge(model, tokenizer, people, args.probe_samples, args.probe_temperature, seed=args.seed)
        probe["key"] = probe_key
        write_json(probe, probe_file)
    timings["probe"] = time.perf_counter() - start

    start = time.perf_counter()
    heldout = heldout_splits(pretrain_dir / "world")
    planned = plan_conditions(args)
    results: dict[Condition, dict] = {}
    finetune_config = Path(args.finetune_config).read_text(encoding="utf-8")
    for number, condition in enumerate(planned, start=1):
        path = out_dir / "conditions" / f"{condition.name}.json"
        key = settings_key(probe_key, finetune_config, args.eval_every, args.lora_learning_rate, condition.name)
        result = load_condition(path, key)
        if result is None:
            print(f"study: stage 3/4, condition {number}/{len(planned)}: {condition.name}", flush=True)
            result = {**run_condition(condition, args, pretrain_dir, world, probe, heldout), "key": key}
            write_json(result, path)
        else:
            print(f"study: stage 3/4, condition {number}/{len(planned)}: {condition.name} (done before)")
        results[condition] = result
    conditions = list(results.values())
    if "early_stopping" in args.mitigations:
        plain = Condition(args.mitigation_fraction, "full", "none", args.finetune_size)
        conditions.append(early_stopped(results[plain]))
    timings["finetune"] = time.perf_counter() - start

    start = time.perf_counter()
    print("study: stage 4/4, results, plots and report", flush=True)
    results_json = {
        "config": run_config_sections(args)["StudyArguments"],
        "probe": {"agreement": probe["agreement"]},
        "conditions": conditions,
        "timings": timings,
    }
    write_json(results_json, out_dir / "results.json")
    write_report(results_json, out_dir)
    timings["report"] = time.perf_counter() - start
    print("study: seconds per stage: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"study: wrote results.json, report.md and plots in {out_dir}")
    return out_dir


__all__ = ["load_condition", "load_stage", "pretrain_matching", "run_study", "settings_key"]
