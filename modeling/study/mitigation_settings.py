"""The settings of the trained mitigations, picked on the dev people by the regime sweep: the KL penalty's weight
(`kl_coef`) and replay's share of pre-training documents (`replay_fraction`).

Each value fine-tunes the mitigation's condition (full fine-tuning at the sweep's share of unknown facts) in the
regime the sweep picked for full fine-tuning, once per training seed, in `mitigations/<setting>_<value>/` with its
records. Both mitigations are read at the end of training (the study compares them with the plain run at its last
epoch), and both exist to keep what the model knew while it fits the set: so the pick (`SETTING_RULE`) is the value
with the best dev known accuracy at the last epoch. The test people play no part.
"""

import dataclasses
from pathlib import Path

import pandas as pd

from ..world import World
from .config import StudyArguments
from .evidence import rate_interval
from .findings import TIE, asked, runs_at, tied_best
from .runner import collect_records, conditions_stage

# Setting -> the mitigation it belongs to (StudyArguments holds both, as the study's settings).
MITIGATION_OF = {"kl_coef": "kl_penalty", "replay_fraction": "replay"}
SETTING_RULE = (
    "per mitigation: the value with the best dev known accuracy at the last epoch (mean over the training seeds; "
    f"closer than {TIE:g} is a tie, broken by the smaller value, the smaller change to the plain run), each value "
    "trained in the regime picked for full fine-tuning; the test people play no part"
)


def setting_summary(setting: str, value: float, condition: dict, records: pd.DataFrame) -> dict:
    """What one value gave (`condition` its results.json condition, `records` its answers): the dev known accuracy
    at the last epoch (mean over the training seeds, the pick's figure, and with its 95% interval over people and
    seeds from the records), the share of each kind of fine-tune example answered exactly there, seconds per run."""
    runs = [run for run in condition["runs"] if not run.get("skipped")]
    ends = [run["per_epoch"][-1] for run in runs]

    def mean(key: str) -> float | None:
        values = [end[key] for end in ends]
        return None if not values or None in values else sum(values) / len(values)

    return {
        "setting": setting,
        "mitigation": MITIGATION_OF[setting],
        "value": value,
        "dev_known_accuracy": mean("dev_known_accuracy"),
        "dev_known_accuracy_interval": rate_interval(asked(runs_at(records, condition), "dev", "known"), "accuracy"),
        "finetune_known_exact_match": mean("finetune_known_exact_match"),
        "finetune_unknown_exact_match": mean("finetune_unknown_exact_match"),
        "seconds": sum(run["seconds"] for run in runs) / max(len(runs), 1),
    }


def run_settings(
    values: list[tuple[str, float]],
    study: StudyArguments,
    out_dir: Path,
    stages: tuple[Path, World, dict, tuple[dict, str]],
) -> list[dict]:
    """Fine-tune each (setting, value) of `values` as `study` (the full pick's regime, no mitigation) with that
    mitigation at that value, on the shared `stages` (pre-training folder, world, probe, epoch 0: what
    `conditions_stage` reads), in `out_dir/mitigations/<setting>_<value>/` (finished runs are reused by key, as the
    study reuses them); returns each value's `setting_summary`, in order."""
    summaries = []
    for number, (setting, value) in enumerate(values, start=1):
        mitigation = MITIGATION_OF[setting]
        folder = out_dir / "mitigations" / f"{setting}_{value:g}"
        trial = dataclasses.replace(study, output_dir=str(folder), mitigations=[mitigation], **{setting: value})
        print(f"sweep: mitigation setting {number}/{len(values)}: {mitigation} at {setting} {value:g}", flush=True)
        results, _ = conditions_stage(trial, folder, *stages, conditions=[trial.plain(mitigation)])
        (condition,) = results.values()
        records, _ = collect_records([condition], folder)
        summaries.append(setting_summary(setting, value, condition, records))
    return summaries


def pick_settings(summaries: list[dict]) -> dict[str, dict]:
    """Setting -> the value `SETTING_RULE` picks: `value`, and `tied` (the other values of equal dev accuracy that
    the tie-break passed over); a setting none of whose values trained has no pick."""
    picks = {}
    for setting in dict.fromkeys(summary["setting"] for summary in summaries):
        # A value none of whose runs trained (an empty set) has no accuracy and cannot be picked.
        tried = [s for s in summaries if s["setting"] == setting and s["dev_known_accuracy"] is not None]
        if not tried:
            continue
        tied = tied_best(tried, "dev_known_accuracy")
        pick = min(tied, key=lambda summary: summary["value"])
        picks[setting] = {"value": pick["value"], "tied": [s["value"] for s in tied if s is not pick]}
    return picks


__all__ = ["MITIGATION_OF", "SETTING_RULE", "pick_settings", "run_settings", "setting_summary"]
