"""The study's settings and the conditions they make.

A study names a pre-training config and a fine-tuning config from `configs/` (the same files `scripts/pretrain.py`
and `scripts/finetune.py` run) and says which conditions to fine-tune: each share of unknown facts with each method,
each fine-tune set size at one share, and each mitigation at one share.
"""

from dataclasses import dataclass, field

from ..run_config import RunArguments

METHODS = ("full", "lora")
# Mitigations that need a fine-tuning of their own; "early_stopping" is read off the plain run's epochs.
TRAINED_MITIGATIONS = ("filter_unknown", "abstention")
MITIGATIONS = ("early_stopping", *TRAINED_MITIGATIONS)


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
    methods: list[str] = field(default_factory=lambda: ["full", "lora"], metadata={"help": "'full' and/or 'lora'"})
    finetune_size: int = field(default=240, metadata={"help": "questions in the fine-tune set of the share grid"})
    thin_sizes: list[int] = field(
        default_factory=lambda: [60], metadata={"help": "smaller fine-tune sets, at size_fraction unknown, full"}
    )
    size_fraction: float = field(default=0.5, metadata={"help": "share of unknown facts in the size conditions"})
    mitigations: list[str] = field(
        default_factory=lambda: list(MITIGATIONS),
        metadata={"help": "early_stopping, filter_unknown, abstention (each at mitigation_fraction, full)"},
    )
    mitigation_fraction: float = field(default=0.5, metadata={"help": "share of unknown facts the mitigations face"})
    lora_learning_rate: float | None = field(
        default=0.01, metadata={"help": "learning rate of the LoRA runs; None: the fine-tuning config's"}
    )
    eval_every: int = field(default=1, metadata={"help": "epochs between two evaluations of a fine-tuning"})
    probe_samples: int = field(default=4, metadata={"help": "sampled continuations per sentence opening"})
    probe_temperature: float = 0.7
    seed: int = field(default=0, metadata={"help": "seed of the fine-tune draws and the probe's sampling"})
    seeds: list[int] = field(
        default_factory=list,
        metadata={"help": "run the whole study once per seed (world and pre-training too), with intervals over seeds"},
    )

    def __post_init__(self):
        for name, allowed in (("methods", METHODS), ("mitigations", MITIGATIONS)):
            unknown = sorted(set(getattr(self, name)) - set(allowed))
            if unknown:
                raise ValueError(f"StudyArguments.{name} has {unknown}; allowed: {list(allowed)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"StudyArguments.seeds has repeats: {self.seeds}")
        fractions = [*self.unknown_fractions, self.size_fraction, self.mitigation_fraction]
        if not all(0 <= fraction <= 1 for fraction in fractions):
            raise ValueError(f"Shares of unknown facts must be in [0, 1], got {fractions}")


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


def plan_conditions(args: StudyArguments) -> list[Condition]:
    """The fine-tunings to run, in order and without repeats: the share x method grid, the thin sizes (full), then
    the trained mitigations (full). Early stopping needs no run of its own: it reads the plain run at its share."""
    planned = [
        Condition(fraction, method, "none", args.finetune_size)
        for fraction in args.unknown_fractions
        for method in args.methods
    ]
    planned += [Condition(args.size_fraction, "full", "none", size) for size in args.thin_sizes]
    if "early_stopping" in args.mitigations:
        planned.append(Condition(args.mitigation_fraction, "full", "none", args.finetune_size))
    planned += [
        Condition(args.mitigation_fraction, "full", mitigation, args.finetune_size)
        for mitigation in TRAINED_MITIGATIONS
        if mitigation in args.mitigations
    ]
    return list(dict.fromkeys(planned))


__all__ = ["MITIGATIONS", "METHODS", "Condition", "StudyArguments", "plan_conditions"]
