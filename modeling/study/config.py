"""The study's settings and the conditions they make.

A study names a pre-training config and a fine-tuning config from `configs/` (the same files `scripts/pretrain.py`
and `scripts/finetune.py` run) and says which conditions to fine-tune: each share of unknown facts with each method,
each fine-tune set size at one share, and each mitigation at one share.
"""

from dataclasses import dataclass, field

from ..run_config import RunArguments, find_config

METHODS = ("full", "lora")
# Mitigations that need a fine-tuning of their own; "early_stopping" is read off the plain run's epochs.
# "filter_unknown" and "abstention" change the fine-tune set; "kl_penalty" (StudyArguments.kl_coef) and "replay"
# (StudyArguments.replay_fraction) change the training (modeling/training/kl_penalty.py, finetuning.with_replay).
TRAINED_MITIGATIONS = ("filter_unknown", "abstention", "kl_penalty", "replay")
MITIGATIONS = ("early_stopping", *TRAINED_MITIGATIONS)
# The default study's: the newer two are run by configs/study/full.yaml, to keep the default
# within its 15 minutes.
DEFAULT_MITIGATIONS = ("early_stopping", "filter_unknown", "abstention")
# Which conditions' runs the hallucination detectors judge (`StudyArguments.judged_by_detectors`).
DETECTOR_CONDITIONS = ("grid", "all")


@dataclass
class StudyArguments(RunArguments):
    """What a study runs; these defaults are the default study (the main job), and a file in configs/study/ or
    flags override them. Pre-training and fine-tuning settings come from their own config files."""

    output_dir: str = field(default="runs/study", metadata={"help": "where every stage writes"})
    pretrain_config: str = field(
        default="configs/study/pretrain.yaml", metadata={"help": "pre-training config (see scripts/pretrain.py)"}
    )
    finetune_config: str = field(
        default="configs/study/finetune.yaml", metadata={"help": "fine-tuning config (see scripts/finetune.py)"}
    )
    unknown_fractions: list[float] = field(
        default_factory=lambda: [0.0, 0.5, 1.0], metadata={"help": "shares of unknown facts in the fine-tune set"}
    )
    methods: list[str] = field(
        default_factory=lambda: ["full"],
        metadata={"help": "'full' and/or 'lora' (configs/study/full.yaml runs both, at the regime sweep's picks)"},
    )
    finetune_size: int = field(default=240, metadata={"help": "questions in the fine-tune set of the share grid"})
    thin_sizes: list[int] = field(
        default_factory=lambda: [30, 60, 120],
        metadata={
            "help": "smaller fine-tune sets, at size_fraction unknown, full: each trained for as many optimizer steps "
            "as a finetune_size set (more epochs) and evaluated at equal epochs and at equal steps"
        },
    )
    size_fraction: float = field(default=0.5, metadata={"help": "share of unknown facts in the size conditions"})
    mitigations: list[str] = field(
        default_factory=lambda: list(DEFAULT_MITIGATIONS),
        metadata={
            "help": "early_stopping, filter_unknown, abstention, kl_penalty, replay (each at mitigation_fraction, "
            "full fine-tuning)"
        },
    )
    mitigation_fraction: float = field(default=0.5, metadata={"help": "share of unknown facts the mitigations face"})
    kl_coef: float = field(
        default=0.1,
        metadata={
            "help": "the kl_penalty mitigation's weight of KL(p_pretrained || p_finetuned) per completion token (the "
            "regime sweep's pick on the dev people, of 0.1 to 10: docs/sweep/sweep.md)"
        },
    )
    replay_fraction: float = field(
        default=0.25,
        metadata={
            "help": "the replay mitigation's share of pre-training documents among the examples (the regime sweep's "
            "pick on the dev people, of 0.1 to 0.5, tied with 0.5)"
        },
    )
    filtered_fractions: list[float] = field(
        default_factory=lambda: [0.0, 0.5, 1.0],
        metadata={
            "help": "shares at which the fine-tune set without its unknown examples (filter_unknown, full) is "
            "fine-tuned too, for Gekhman et al.'s Figure 3b (D against D without unknowns)"
        },
    )
    lora_learning_rate: float | None = field(
        default=0.003,
        metadata={"help": "learning rate of the LoRA runs (the regime sweep's pick); None: the fine-tuning config's"},
    )
    eval_epochs: list[int] = field(
        default_factory=lambda: [1, 2, 4, 6, 8, 12, 24],
        metadata={
            "help": "fine-tuning epochs after which each run is evaluated, ending with its last (epoch 0, the "
            "pre-trained model, always is): dense where the curves move"
        },
    )
    probe_samples: int = field(default=4, metadata={"help": "sampled continuations per sentence opening"})
    probe_temperature: float = 0.7
    entropy_samples: int = field(
        default=5,
        metadata={
            "help": "answers sampled per held-out question for the semantic-entropy detector and its probe: 5 keep "
            "the default study within its 15 minutes, configs/study/full.yaml samples 10 as Kossen et al. (2024) "
            "did; 0 leaves those two detectors out"
        },
    )
    entropy_temperature: float = field(default=1.0, metadata={"help": "temperature of those samples"})
    detector_conditions: str = field(
        default="grid",
        metadata={
            "help": "the conditions whose runs the hallucination detectors judge: 'grid', the share grid's plain runs "
            "and each trained mitigation at its share (the detectors took a sixth of the default study's time before "
            "the thin sizes and the other shares' sets without unknowns were left out); 'all' (configs/study/full.yaml)"
        },
    )
    training_seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2],
        metadata={
            "help": "each condition is fine-tuned once per seed (fine-tune draw, batch order, adapter init); every "
            "interval resamples them (docs/study.md)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the probe's sampling (and of a world under `seeds`)"})
    seeds: list[int] = field(
        default_factory=list,
        metadata={"help": "run the whole study once per seed (world and pre-training too), with intervals over seeds"},
    )

    def plain(self, mitigation: str = "none", fraction: float | None = None) -> "Condition":
        """The full fine-tuning on `finetune_size` questions at `fraction` unknown (default `mitigation_fraction`)
        with `mitigation`: the plain run the mitigations are compared with, or one of them."""
        share = self.mitigation_fraction if fraction is None else fraction
        return Condition(share, "full", mitigation, self.finetune_size)

    def judged_by_detectors(self, condition: "Condition") -> bool:
        """Whether the detectors judge the runs of `condition` (one with runs of its own: early stopping has none):
        under `detector_conditions` "grid", the plain runs on `finetune_size` questions and the trained mitigations
        at `mitigation_fraction`; under "all", every run."""
        if self.detector_conditions == "all":
            return True
        if condition.finetune_size != self.finetune_size:
            return False
        mitigation = (
            condition.mitigation in TRAINED_MITIGATIONS and condition.fraction_unknown == self.mitigation_fraction
        )
        return condition.mitigation == "none" or mitigation

    def __post_init__(self):
        super().__post_init__()
        self.pretrain_config, self.finetune_config = map(find_config, (self.pretrain_config, self.finetune_config))
        fractions_allowed = "shares of unknown facts, each in [0, 1]"
        rules = (
            ("methods", self.methods and set(self.methods) <= set(METHODS), f"one or more of {list(METHODS)}"),
            ("mitigations", set(self.mitigations) <= set(MITIGATIONS), f"any of {list(MITIGATIONS)}"),
            ("unknown_fractions", self.unknown_fractions and _shares(self.unknown_fractions), fractions_allowed),
            ("filtered_fractions", _shares(self.filtered_fractions), fractions_allowed),
            ("size_fraction", _shares([self.size_fraction]), "a share of unknown facts in [0, 1]"),
            ("mitigation_fraction", _shares([self.mitigation_fraction]), "a share of unknown facts in [0, 1]"),
            ("finetune_size", self.finetune_size >= 1, "a positive number of questions"),
            ("thin_sizes", all(size >= 1 for size in self.thin_sizes), "positive numbers of questions"),
            ("eval_epochs", _increasing_from_1(self.eval_epochs), "increasing epochs from 1 on, without repeats"),
            ("probe_samples", self.probe_samples >= 1, "a positive number of samples"),
            ("kl_coef", self.kl_coef > 0, "a positive weight"),
            ("replay_fraction", 0 < self.replay_fraction < 1, "a share in (0, 1)"),
            ("probe_temperature", self.probe_temperature > 0, "a positive temperature"),
            ("entropy_samples", self.entropy_samples == 0 or self.entropy_samples >= 2, "0 (none), or 2 or more"),
            ("entropy_temperature", self.entropy_temperature > 0, "a positive temperature"),
            ("detector_conditions", self.detector_conditions in DETECTOR_CONDITIONS, f"one of {DETECTOR_CONDITIONS}"),
            (
                "lora_learning_rate",
                self.lora_learning_rate is None or self.lora_learning_rate > 0,
                "a positive rate, or None",
            ),
            (
                "training_seeds",
                _seeds(self.training_seeds) and self.training_seeds,
                "distinct seeds >= 0, one or more",
            ),
            ("seeds", _seeds(self.seeds), "distinct seeds >= 0 (or none)"),
            ("seed", self.seed >= 0, "a seed >= 0"),
        )
        for name, holds, allowed in rules:
            if not holds:
                raise ValueError(f"StudyArguments.{name} is {getattr(self, name)!r}; allowed: {allowed}")
        self._check_references()

    def _check_references(self) -> None:
        """Thin sizes and sets without unknowns are read against plain full runs of the grid: those must be planned
        (else they would be trained and then left out of every comparison)."""
        if any(size > self.finetune_size for size in self.thin_sizes):
            raise ValueError(
                f"StudyArguments.thin_sizes {self.thin_sizes} must not exceed finetune_size={self.finetune_size}"
            )
        needed = {
            "thin_sizes": [self.size_fraction] if self.thin_sizes else [],
            "filtered_fractions": self.filtered_fractions,
        }
        for name, shares in needed.items():
            missing = sorted(set(shares) - set(self.unknown_fractions) if "full" in self.methods else set(shares))
            if missing:
                raise ValueError(
                    f"StudyArguments.{name} needs the plain full fine-tuning at shares {missing} to compare with: add "
                    f"them to unknown_fractions (now {self.unknown_fractions}) with 'full' in methods (now "
                    f"{self.methods}), or drop them from {name}"
                )


def _shares(values: list[float]) -> bool:
    return all(0 <= value <= 1 for value in values)


def _seeds(values: list[int]) -> bool:
    return all(value >= 0 for value in values) and len(set(values)) == len(values)


def _increasing_from_1(epochs: list[int]) -> bool:
    return bool(epochs) and epochs[0] >= 1 and epochs == sorted(set(epochs))


@dataclass(frozen=True)
class Condition:
    """One fine-tuning of the study."""

    fraction_unknown: float
    method: str
    mitigation: str
    finetune_size: int

    @property
    def name(self) -> str:
        return f"{self.method}_u{self.fraction_unknown:g}_n{self.finetune_size}_{self.mitigation}"

    @classmethod
    def of(cls, result: dict) -> "Condition":
        """The condition of a result (a condition of results.json)."""
        return cls(result["fraction_unknown"], result["method"], result["mitigation"], result["finetune_size"])


def by_condition(results: list[dict]) -> dict["Condition", dict]:
    """Results (conditions of results.json) by their `Condition`, to look one up by what it is."""
    return {Condition.of(result): result for result in results}


@dataclass(frozen=True)
class Run:
    """One fine-tuning of the study: a condition under one training seed."""

    condition: Condition
    training_seed: int

    @property
    def name(self) -> str:
        return f"{self.condition.name}_s{self.training_seed}"

    @property
    def folder(self) -> str:
        """Its folder, relative to the study's output folder: `conditions/<condition>/seed_<S>`."""
        return f"conditions/{self.condition.name}/seed_{self.training_seed}"


def plan_conditions(args: StudyArguments) -> list[Condition]:
    """The fine-tunings to run, in order and without repeats: the share x method grid, the thin sizes (full), the
    sets without their unknown examples (full, filter_unknown) at `filtered_fractions`, then the trained mitigations
    (full). Early stopping needs no run of its own: it reads the plain run at its share."""
    planned = [
        Condition(fraction, method, "none", args.finetune_size)
        for fraction in args.unknown_fractions
        for method in args.methods
    ]
    planned += [Condition(args.size_fraction, "full", "none", size) for size in args.thin_sizes]
    planned += [args.plain("filter_unknown", fraction) for fraction in args.filtered_fractions]
    if "early_stopping" in args.mitigations:
        planned.append(args.plain())
    planned += [args.plain(mitigation) for mitigation in TRAINED_MITIGATIONS if mitigation in args.mitigations]
    return list(dict.fromkeys(planned))


__all__ = [
    "DEFAULT_MITIGATIONS",
    "DETECTOR_CONDITIONS",
    "MITIGATIONS",
    "TRAINED_MITIGATIONS",
    "METHODS",
    "Condition",
    "Run",
    "StudyArguments",
    "by_condition",
    "plan_conditions",
]
