"""Stage 4b: each run's hallucination detectors (`detectors/`), from its saved model and its last evaluation's answers
on record, and the study's AUROCs with intervals from every scored answer.

A run's detectors are computed after it is fine-tuned, from what it saved: the model (or adapter) it ends with and
its records of that model's answers at its last epoch. So they are redone, without fine-tuning again, whenever the
detectors' settings change, and every detector's score of every test answer is on record
(`conditions/<name>/seed_<S>.detectors.parquet`, collected in `detector_scores.parquet`), from which the AUROCs and
their paired intervals (`evidence.auroc_intervals`) are computed.
"""

import time
from pathlib import Path

import pandas as pd
from datasets import Features, Value

from ..checkpoints import load_model_and_tokenizer
from ..files import write_json
from .config import Run, StudyArguments
from .detectors import DETECTORS, SCORE_FIELDS, detector_scores, summarize_detectors
from .evidence import auroc_intervals
from .records import read_records, write_records

SCORES_FILE = "detector_scores.parquet"
SCORE_FEATURES = Features(
    {
        "condition": Value("string"),
        "training_seed": Value("int64"),
        "epoch": Value("int64"),  # the run's last: the model it saved
        "person_id": Value("int64"),
        "attribute": Value("string"),
        "group": Value("string"),
        "verdict": Value("string"),  # correct or hallucinated (abstentions are not scored)
        "is_correct": Value("bool"),
        "entropy": Value("float64"),  # semantic entropy (nats) of the sampled answers, when sampled
        **{name: Value("float64") for name in DETECTORS},  # each detector's score: higher, more likely correct
    }
)
assert set(SCORE_FIELDS) <= set(SCORE_FEATURES)


def detector_settings(args: StudyArguments) -> list:
    """What a run's detectors depend on besides the run itself: part of their key."""
    # The last part names how long a sampled answer may run (`_sampled_entropies`); until then it ran 24 tokens.
    return [
        list(DETECTORS),
        args.entropy_samples,
        args.entropy_temperature,
        "sampled up to value_token_budget of ANSWER_TEXTS",
    ]


def _saved_model(result: dict, out_dir: Path, pretrain_dir: Path):
    saved = out_dir / result["saved"]
    if saved.name == "adapter":  # a LoRA run saved its adapter: merged into the pre-trained model it was trained on
        return load_model_and_tokenizer(pretrain_dir / "model", saved)
    return load_model_and_tokenizer(saved)


def run_detectors(run: Run, result: dict, args: StudyArguments, out_dir: Path, pretrain_dir: Path) -> dict:
    """`result` (a finished run's) with its `detector` figures (`summarize_detectors`) and its scores' file
    (`detector_scores`, `detector_scores_sha256`), from its saved model and its records at its last epoch.

    Raises:
        ValueError: if the run's records file is not the one it wrote.
    """
    start = time.perf_counter()
    records = read_records(out_dir / result["records"], result["records_sha256"])
    if records is None:
        raise ValueError(f"{result['records']} is not the records file its run wrote")
    last = int(records["epoch"].max())
    rows = {
        half: records[(records["epoch"] == last) & (records["split"] == half)].to_dict("records")
        for half in ("dev", "test")
    }
    model, tokenizer = _saved_model(result, out_dir, pretrain_dir)
    scored, fits = detector_scores(
        model, tokenizer, rows["dev"], rows["test"], run.training_seed, args.entropy_samples, args.entropy_temperature
    )
    path = out_dir / f"{run.folder}.detectors.parquet"
    extra = {"condition": run.condition.name, "training_seed": run.training_seed, "epoch": last}
    sha256 = write_records([extra | row for row in scored], path, SCORE_FEATURES)
    seconds = time.perf_counter() - start
    return result | {
        "detector": summarize_detectors(scored, rows["dev"], len(rows["test"]), fits),
        "detector_scores": path.relative_to(out_dir).as_posix(),
        "detector_scores_sha256": sha256,
        "timing": result["timing"] | {"detector": seconds},
        "seconds": result["seconds"] - result["timing"].get("detector", 0.0) + seconds,
    }


def without_detectors(result: dict) -> dict:
    """A finished run's result as `run_finetuning` gave it, before `detector_stage` judged it: what a run reused from a
    study whose detectors judged it becomes in a study whose detectors do not (`StudyArguments.judged_by_detectors`),
    so that neither its scores nor their seconds count there. A skipped run is returned as it is."""
    if result.get("skipped"):
        return result
    timing = dict(result["timing"])
    seconds = timing.pop("detector", 0.0)
    dropped = ("detector_scores", "detector_scores_sha256", "detector_key")
    kept = {key: value for key, value in result.items() if key not in dropped}
    return kept | {"detector": None, "timing": timing, "seconds": result["seconds"] - seconds}


def detector_stage(
    run: Run, result: dict, keys: tuple[str, str], args: StudyArguments, out_dir: Path, pretrain_dir: Path
) -> dict:
    """A finished run's result with its detectors: those on record when they carry the detectors' key (`keys`: the
    run's key, and the detectors', which adds `detector_settings`) and their scores' file is whole, else computed now
    (`run_detectors`) and saved with the run's result (`conditions/<name>/seed_<S>.json`, under the run's key). A
    skipped run is returned as it is."""
    run_key, detector_key = keys
    if result.get("skipped"):
        return result
    scores = result.get("detector_scores")
    if result.get("detector_key") == detector_key and scores:
        if read_records(out_dir / scores, result.get("detector_scores_sha256"), SCORE_FEATURES) is not None:
            return result
    print(f"study: stage 4/5, detectors of {run.name} (training seed {run.training_seed})", flush=True)
    result = run_detectors(run, result, args, out_dir, pretrain_dir) | {"detector_key": detector_key}
    write_json({**result, "key": run_key}, out_dir / f"{run.folder}.json")
    return result


def collect_detector_scores(conditions: list[dict], out_dir: Path) -> pd.DataFrame:
    """Every run's detector scores in one table, written as `detector_scores.parquet` in `out_dir`."""
    frames = [
        read_records(out_dir / run["detector_scores"], run["detector_scores_sha256"], SCORE_FEATURES)
        for condition in conditions
        for run in condition["runs"]
        if run.get("detector_scores")
    ]
    scores = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(SCORE_FEATURES))
    write_records(scores.to_dict("records"), out_dir / SCORES_FILE, SCORE_FEATURES)
    return scores


def detector_evidence(scores: pd.DataFrame, baseline: str = "confidence") -> dict:
    """Per condition, every detector's AUROC on the test people (known and unknown pooled, abstentions left out) over
    its training seeds, and its difference from the `baseline`'s, with paired intervals (`auroc_intervals`)."""
    return {
        "method": "AUROC per training seed, averaged over seeds; 95% percentile intervals of a paired two-level "
        "bootstrap over test people and training seeds (4,000 resamples, the same draws for every detector)",
        "baseline": baseline,
        "conditions": {
            name: auroc_intervals(rows, list(DETECTORS), baseline)
            for name, rows in scores.groupby("condition", sort=False)
        },
    }


__all__ = [
    "SCORES_FILE",
    "SCORE_FEATURES",
    "collect_detector_scores",
    "detector_evidence",
    "detector_settings",
    "detector_stage",
    "run_detectors",
    "without_detectors",
]
