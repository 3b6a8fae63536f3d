"""Two architectures on the same worlds (LSTM against a transformer of the same size): which one loses more on known
people as the share of unknown fine-tune facts grows, which one hallucinates more on unknown people, and whose
confidence detects its hallucinations better.

Each side is a whole-study run over world `seeds` (`StudyArguments.seeds`): the same world seeds give the same
people and questions to both, so every difference is paired on the same test people. Within a world, people and
training seeds are resampled as everywhere in the study (`evidence.py`), the same draws for both architectures;
worlds are strata, each resampled on its own, and a figure is the mean over the worlds. So the intervals hold the
variation of people and training seeds within these worlds; how much the worlds themselves differ is shown by the
per-world differences beside them (three worlds are too few to resample).
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..run_config import RunArguments
from .detection import SCORES_FILE
from .evidence import RESAMPLES, auroc_draws, cell, cell_difference, person_draws, rate_draws
from .runner import ANSWERS_FILE

FIGURES = {  # name -> (group of test people, statistic), rates from the answers on record
    "known_accuracy": ("known", "accuracy"),
    "unknown_hallucination_rate": ("unknown", "hallucination_rate"),
}


@dataclass
class CompareArguments(RunArguments):
    """What `lstm-lab-compare` compares: two studies run over the same world seeds."""

    studies: list[str] = field(
        default_factory=lambda: ["runs/architectures/lstm", "runs/architectures/gpt2"],
        metadata={"help": "two study folders, each run with `seeds` (seed_<S>/ per world): the first minus the second"},
    )
    labels: list[str] = field(default_factory=lambda: ["LSTM", "gpt2"], metadata={"help": "a name for each study"})
    output_dir: str = field(default="runs/architectures", metadata={"help": "where comparison.md/.json/.png go"})

    def __post_init__(self):
        super().__post_init__()
        if len(self.studies) != 2 or len(self.labels) != 2 or len(set(self.labels)) != 2:
            raise ValueError("CompareArguments needs two studies and two distinct labels")

    def check_studies(self) -> None:
        """Refuse studies that share no finished world (before any figure is computed).

        Raises:
            ValueError: naming both studies.
        """
        if not shared_worlds([Path(study) for study in self.studies]):
            raise ValueError(
                f"{self.studies[0]} and {self.studies[1]} share no finished world (seed_<S>/results.json): run each "
                "study with the same `seeds` first"
            )


def shared_worlds(studies: list[Path]) -> list[int]:
    """The world seeds whose study (`seed_<S>/results.json`) every one of `studies` has finished."""
    seeds = [{int(p.parent.name.removeprefix("seed_")) for p in study.glob("seed_*/results.json")} for study in studies]
    return sorted(set.intersection(*seeds))


@dataclass
class World:
    """One world's finished study of one architecture: its results, answers and detector scores."""

    results: dict
    answers: pd.DataFrame
    scores: pd.DataFrame

    @classmethod
    def load(cls, folder: Path) -> "World":
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        return cls(results, pd.read_parquet(folder / ANSWERS_FILE), pd.read_parquet(folder / SCORES_FILE))

    def plain_conditions(self) -> dict[float, str]:
        """Share of unknown facts -> name of the plain full fine-tuning on the study's `finetune_size` questions."""
        size = self.results["config"]["finetune_size"]
        return {
            c["fraction_unknown"]: c["name"]
            for c in self.results["conditions"]
            if c["method"] == "full" and c["mitigation"] == "none" and c["finetune_size"] == size
        }

    def test_answers(self, condition: str, group: str, epoch: str = "last") -> pd.DataFrame:
        """The test people's answers of `group` in every run of `condition`, at each run's last epoch (or epoch 0)."""
        rows = self.answers[(self.answers["condition"] == condition) & (self.answers["split"] == "test")]
        last = rows.groupby("training_seed")["epoch"].transform("max") if epoch == "last" else 0
        return rows[(rows["epoch"] == last) & (rows["group"] == group)]


def _worlds_mean(per_world: list[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray]:
    """A figure over worlds: the mean of the worlds' estimates and, resample by resample, of their draws."""
    return float(np.mean([e for e, _ in per_world])), np.mean([d for _, d in per_world], axis=0)


def _compared(sides: list[list[tuple[float, np.ndarray]]]) -> dict:
    """Per world (estimate, draws) of each side -> each side's cell over worlds, the difference and its per-world
    estimates."""
    a, b = (_worlds_mean(side) for side in sides)
    return {
        "sides": [cell(*a), cell(*b)],
        "difference": cell_difference(a, b),
        "per_world": [ea - eb for (ea, _), (eb, _) in zip(*sides, strict=True)],
    }


def compare_rates(worlds: list[tuple[World, World]], shares: list[float], figure: str, resamples: int) -> dict:
    """`figure` at each share (and, for known accuracy, its change from the 0% share) for both sides."""
    group, statistic = FIGURES[figure]
    at, change = {share: ([], []) for share in shares}, {share: ([], []) for share in shares}
    for number, pair in enumerate(worlds):
        arms = [side.test_answers(side.plain_conditions()[s], group) for side in pair for s in shares]
        drawn = rate_draws(arms, statistic, resamples, seed=number)  # the same draws for every arm of this world
        for index, share in enumerate(shares):
            for side in range(2):
                value, zero = drawn[side * len(shares) + index], drawn[side * len(shares)]
                at[share][side].append(value)
                change[share][side].append((value[0] - zero[0], value[1] - zero[1]))
    out = {"at_share": {str(s): _compared(list(at[s])) for s in shares}}
    if figure == "known_accuracy":
        out["change_from_0"] = {str(s): _compared(list(change[s])) for s in shares[1:]}
    return out


def compare_confidence(worlds: list[tuple[World, World]], shares: list[float], resamples: int) -> dict:
    """The confidence's AUROC on the test people (known and unknown pooled) at each share, for both sides."""
    at = {share: ([], []) for share in shares}
    for number, pair in enumerate(worlds):
        rows = [side.scores[side.scores["condition"].isin(side.plain_conditions().values())] for side in pair]
        people = sorted(set(rows[0]["person_id"]) | set(rows[1]["person_id"]))
        seeds = sorted(set(rows[0]["training_seed"]) | set(rows[1]["training_seed"]))
        draws = person_draws(len(people), len(seeds), resamples, seed=number)
        for share in shares:
            for side, (world, scored) in enumerate(zip(pair, rows, strict=True)):
                mine = scored[scored["condition"] == world.plain_conditions()[share]]
                at[share][side].append(auroc_draws(mine, "confidence", seeds, people, draws))
    return {"at_share": {str(s): _compared(list(at[s])) for s in shares}}


def compare_studies(args: CompareArguments, resamples: int = RESAMPLES) -> dict:
    """Every figure of the comparison of `args.studies` over their shared worlds (see the module's docstring).

    Raises:
        ValueError: if the two studies do not share their plain full fine-tunings' shares in every world.
    """
    seeds = shared_worlds([Path(study) for study in args.studies])
    worlds = [tuple(World.load(Path(study) / f"seed_{seed}") for study in args.studies) for seed in seeds]
    shares = sorted(set.intersection(*(set(w.plain_conditions()) for pair in worlds for w in pair)))
    if 0.0 not in shares or len(shares) < 2:
        raise ValueError(f"the studies share the plain full fine-tunings at {shares}; the comparison needs 0 and more")
    # Before fine-tuning: what each pre-trained model answers (epoch 0 of any run; the 0% share's).
    epoch0 = [
        rate_draws([w.test_answers(w.plain_conditions()[0.0], "known", epoch="0") for w in pair], "accuracy",
                   resamples, seed=number)
        for number, pair in enumerate(worlds)
    ]  # fmt: skip
    return {
        "labels": args.labels,
        "studies": args.studies,
        "worlds": seeds,
        "shares": shares,
        "resamples": resamples,
        "pretrained_known_accuracy": _compared([[side[i] for side in epoch0] for i in range(2)]),
        "known_accuracy": compare_rates(worlds, shares, "known_accuracy", resamples),
        "unknown_hallucination_rate": compare_rates(worlds, shares, "unknown_hallucination_rate", resamples),
        "confidence_auroc": compare_confidence(worlds, shares, resamples),
        "configs": [worlds[0][side].results["config"] for side in range(2)],
        "seconds": [sum(sum(pair[side].results["timings"].values()) for pair in worlds) for side in range(2)],
    }


__all__ = ["CompareArguments", "FIGURES", "World", "compare_studies", "shared_worlds"]
