"""Every answer the study scores, on record: one row per fine-tuning run (condition and training seed), evaluated
epoch (0 is the pre-trained model) and question asked (the run's fine-tune set, the dev and the test people).

The rows are written as Parquet (`datasets.load_dataset("parquet", data_files=...)` reads them) through a staging
file, and every figure of the study is computed from them (`per_epoch_figures`), so a reader can re-score any answer
and recompute any number. A run's file is trusted only when its SHA-256 matches the one its result recorded.
"""

import hashlib
from pathlib import Path

import datasets
import pandas as pd
from datasets import Features, Value

from ..factuality.factuality import classify_answers
from ..files import staged_file
from .detectors import auroc

RECORD_FEATURES = Features(
    {
        "condition": Value("string"),
        "training_seed": Value("int64"),
        "epoch": Value("int64"),
        "split": Value("string"),  # finetune, dev or test
        "group": Value("string"),  # known or unknown
        "person_id": Value("int64"),
        "attribute": Value("string"),
        "exposure": Value("int64"),  # biographies of the person in the pre-training corpus
        "knowledge": Value("string"),  # the world's designed category (from exposure)
        "probe_category": Value("string"),  # what the probe found the pre-trained model knows of this fact
        "prompt": Value("string"),
        "reference": Value("string"),  # what the answer is scored against: on the fine-tune set, the training target
        "truth": Value("string"),  # the world's value (differs from the reference where the target is "I don't know")
        "answer": Value("string"),
        "verdict": Value("string"),  # correct, hallucinated or abstained (the `factuality` metric's)
        "exact_match": Value("bool"),  # the metric's exact_match: correct, or abstained where the reference abstains
        "confidence": Value("float64"),  # mean log-probability of the answer's tokens (nats)
        # Where a hallucinated answer comes from, and how often chance would land there (`error_sources.py`).
        "error_source": Value("string"),
        "chance_hedged_default": Value("float64"),
        "chance_borrowed": Value("float64"),
    }
)
GROUPS = ("known", "unknown")
RATES = ("accuracy", "hallucination_rate", "abstention_rate")


def evaluation_records(
    sets: dict[str, list[dict]], condition: str, training_seed: int, epoch: int, probe_categories: dict
) -> list[dict]:
    """The records of one evaluation: `sets` maps `{split}_{group}` (e.g. `dev_known`) to `score_answers`' answers,
    `probe_categories` (person_id, attribute) to the probe's category of that fact."""
    rows = []
    for name, answers in sets.items():
        split, group = name.split("_")
        references = [answer["reference"] for answer in answers]
        abstaining_references = [v == "abstained" for v in classify_answers(references, references)]
        for answer, reference_abstains in zip(answers, abstaining_references, strict=True):
            rows.append(
                {
                    "condition": condition,
                    "training_seed": training_seed,
                    "epoch": epoch,
                    "split": split,
                    "group": group,
                    "person_id": answer["person_id"],
                    "attribute": answer["attribute"],
                    "exposure": answer["exposure"],
                    "knowledge": answer["knowledge"],
                    "probe_category": probe_categories[(answer["person_id"], answer["attribute"])],
                    "prompt": answer["prompt"],
                    "reference": answer["reference"],
                    "answer": answer["prediction"],
                    "verdict": answer["verdict"],
                    "exact_match": answer["verdict"] == "correct"
                    or (answer["verdict"] == "abstained" and reference_abstains),
                    "confidence": answer["confidence"],
                }
            )
    return rows


def write_records(rows: list[dict], path: Path, features: Features = RECORD_FEATURES) -> str:
    """Write `rows` (dicts with the columns of `features`) as Parquet at `path` through a staging file; returns the
    file's SHA-256, which `read_records` checks."""
    with staged_file(path) as staging:
        columns = {name: [row[name] for row in rows] for name in features}  # no row (e.g. every answer abstained)
        datasets.Dataset.from_dict(columns, features=features).to_parquet(staging)
        digest = file_sha256(staging)
    return digest


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_records(path: Path, sha256: str | None = None, features: Features = RECORD_FEATURES) -> pd.DataFrame | None:
    """The records at `path` as a DataFrame, or None when the file is missing, does not parse, lacks a column of
    `features` or (when `sha256` is given) is not the file that was written."""
    try:
        if sha256 is not None and file_sha256(path) != sha256:
            return None
        frame = pd.read_parquet(path)
    except (OSError, ValueError):
        return None
    return frame if set(features).issubset(frame.columns) else None


def _figures(rows: pd.DataFrame) -> dict:
    """Rates and the confidence's AUROC (answered questions only; None without a right and a wrong
    answer) of one set of records, as the `factuality` metric computes them."""
    verdicts = rows["verdict"]
    answered = rows[verdicts != "abstained"]
    return {
        "accuracy": float((verdicts == "correct").mean()),
        "hallucination_rate": float((verdicts == "hallucinated").mean()),
        "abstention_rate": float((verdicts == "abstained").mean()),
        "auroc": auroc(list(answered["verdict"] == "correct"), list(answered["confidence"])),
    }


def per_epoch_figures(run: pd.DataFrame) -> list[dict]:
    """The per-epoch figures of one run (the records of one condition and training seed), epoch by epoch: the
    fine-tune set's exact match (all, known, unknown; None for a group the set lacks), and for the dev and test
    people of each group the rates and AUROC, with the known people's accuracy per designed category."""
    records = []
    for epoch, rows in run.groupby("epoch", sort=True):
        record: dict = {"epoch": int(epoch)}
        finetune = rows[rows["split"] == "finetune"]
        record["finetune_exact_match"] = float(finetune["exact_match"].mean()) if len(finetune) else None
        for group in GROUPS:
            fitted = finetune[finetune["group"] == group]
            record[f"finetune_{group}_exact_match"] = float(fitted["exact_match"].mean()) if len(fitted) else None
        for half in ("test", "dev"):
            for group in GROUPS:
                asked = rows[(rows["split"] == half) & (rows["group"] == group)]
                figures = _figures(asked) if len(asked) else {}
                for figure in (*RATES, "auroc"):
                    record[f"{half}_{group}_{figure}"] = figures.get(figure)
            known = rows[(rows["split"] == half) & (rows["group"] == "known")]
            for category in ("highly_known", "weakly_known"):
                asked = known[known["knowledge"] == category]
                record[f"{half}_{category}_accuracy"] = (
                    float((asked["verdict"] == "correct").mean()) if len(asked) else None
                )
        records.append(record)
    return records


__all__ = [
    "RECORD_FEATURES",
    "evaluation_records",
    "file_sha256",
    "per_epoch_figures",
    "read_records",
    "write_records",
]
