"""The fine-tuning regime sweep: which learning rate and batch size give a regime in which fitting takes time, and
does training on past the best dev epoch (early stopping) to convergence cost accuracy (Gekhman et al., 2024)?

Every regime (method x learning rate x batch size) fine-tunes the plain condition at `fraction_unknown` for a fixed
long budget (`eval_epochs[-1]`), once per training seed, on one shared pre-training, probe and epoch 0: the study's
own stages and runs (`runner.py`), each regime in `regimes/<name>/` with the fine-tuning config it ran
(`regimes/<name>/finetune.yaml`, the base config with the regime's settings) and its records. For each regime,
`regime_summary` gives each run's early-stopping epoch (best dev known accuracy, Gekhman et al.'s EARLY_STOP), the
epoch each kind of fine-tune example is fitted by (`FITTED` of it answered exactly), and the test known accuracy at
early stop and at the last epoch (their CONVERGENCE: the set fitted, then the rest of the fixed budget), with the
paired interval of the late harm (the difference).

The pick (`pick_regimes`) looks at the dev people and the fine-tune set only, never the test people or the late harm
it would be chosen to show: see `CHOICE_RULE`. In full fine-tuning's pick, the sweep then tries the trained
mitigations' settings (`kl_coefs`, `replay_fractions`) and picks each on the dev people (`mitigation_settings.py`).
"""

import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..files import write_json
from ..run_config import RunArguments, find_config, run_config_sections
from ..threads import set_num_threads
from ..world import load_world
from .conditions import best_epoch, check_replay_fits, condition_configs, early_stopped
from .config import METHODS, Run, StudyArguments, plan_conditions
from .evidence import difference_interval, rate_interval, verdict
from .findings import LATE_HARM, asked, runs_at, tied_best
from .mitigation_settings import SETTING_RULE, pick_settings, run_settings
from .runner import collect_records, conditions_stage, epoch0_stage, pretrain_matching, probe_stage
from .sweep_report import write_sweep_report

# A kind of fine-tune example (known or unknown) counts as fitted once this share of it is answered exactly.
FITTED = 0.95
# Early stopping has room to act only if the unknown examples take at least this many epochs to be fitted.
ROOM_EPOCHS = 4
CHOICE_RULE = (
    f"per method: among the regimes whose every run has both kinds of fine-tune example fitted ({FITTED:.0%} answered "
    f"exactly) at its last epoch, and fitted the unknown ones no earlier than epoch {ROOM_EPOCHS} (so that early "
    "stopping has room to act), the one with the best dev known accuracy at its early-stopping epoch (mean over the "
    "training seeds; equal to 1e-9 is a tie, broken by the larger batch, the fewer optimizer steps the study's "
    "budget needs, then the lower learning rate); LoRA only at the batch size of full fine-tuning's pick, which the "
    "study shares. Where no regime qualifies, the condition is relaxed (first the room, then the fitting) and the "
    "pick says so. The test people and the late harm play no part"
)


@dataclass(frozen=True)
class Regime:
    """One fine-tuning regime of the sweep."""

    method: str
    learning_rate: float
    batch_size: int

    @property
    def name(self) -> str:
        return f"{self.method}_lr{self.learning_rate:g}_b{self.batch_size}"


@dataclass
class SweepArguments(RunArguments):
    """What the regime sweep runs; these defaults are the committed sweep (configs/study/sweep.yaml)."""

    output_dir: str = field(default="runs/sweep", metadata={"help": "where every stage and regime writes"})
    pretrain_config: str = field(default="configs/study/pretrain.yaml", metadata={"help": "as the study's"})
    finetune_config: str = field(
        default="configs/study/finetune.yaml",
        metadata={"help": "the base fine-tuning config; each regime overrides its learning rate, batch and epochs"},
    )
    fraction_unknown: float = field(default=0.5, metadata={"help": "share of unknown facts in the fine-tune set"})
    finetune_size: int = field(default=240, metadata={"help": "questions in the fine-tune set"})
    methods: list[str] = field(default_factory=lambda: ["full", "lora"], metadata={"help": "'full' and/or 'lora'"})
    full_learning_rates: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    lora_learning_rates: list[float] = field(default_factory=lambda: [3e-3, 1e-2, 3e-2])
    batch_sizes: list[int] = field(default_factory=lambda: [16, 64], metadata={"help": "per-device train batch"})
    eval_epochs: list[int] = field(
        default_factory=lambda: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 40],
        metadata={"help": "epochs evaluated, dense where the curves move; the last is the fixed budget"},
    )
    training_seeds: list[int] = field(default_factory=lambda: [0, 1])
    kl_coefs: list[float] = field(
        default_factory=lambda: [0.1, 0.3, 1.0, 3.0, 10.0],
        metadata={"help": "KL penalty weights tried in full fine-tuning's pick (mitigation_settings.py; [] none)"},
    )
    replay_fractions: list[float] = field(
        default_factory=lambda: [0.1, 0.25, 0.5],
        metadata={"help": "replayed shares tried in full fine-tuning's pick (mitigation_settings.py; [] none)"},
    )
    probe_samples: int = field(default=4, metadata={"help": "as the study's"})
    probe_temperature: float = 0.7
    seed: int = field(default=0, metadata={"help": "seed of the probe's sampling"})

    def __post_init__(self):
        super().__post_init__()
        self.pretrain_config, self.finetune_config = map(find_config, (self.pretrain_config, self.finetune_config))
        if not 0 <= self.fraction_unknown <= 1:
            raise ValueError(
                f"SweepArguments.fraction_unknown is {self.fraction_unknown}; allowed: a share of unknown facts in "
                "[0, 1]"
            )
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"SweepArguments.methods has {unknown}; allowed: {list(METHODS)}")
        if not self.regimes():
            raise ValueError("SweepArguments plans no regime: give learning rates and batch sizes for its methods")
        if any(size < 1 for size in self.batch_sizes):
            raise ValueError(f"SweepArguments.batch_sizes must be positive, got {self.batch_sizes}")
        if any(rate <= 0 for rate in self.full_learning_rates + self.lora_learning_rates):
            raise ValueError("SweepArguments' learning rates must be positive")
        if self.mitigation_values() and "full" not in self.methods:
            raise ValueError(
                "SweepArguments.kl_coefs and replay_fractions are tried in full fine-tuning's pick: add 'full' to "
                f"methods (now {self.methods}) or set both to [] in the config file"
            )
        study = self.study(self.finetune_config, Path(self.output_dir))  # the settings it shares with a study, checked
        for setting, value in self.mitigation_values():
            dataclasses.replace(study, **{setting: value})  # each value, checked as the study's setting

    def mitigation_values(self) -> list[tuple[str, float]]:
        """Every (setting, value) of a trained mitigation the sweep tries (`mitigation_settings.py`), in order."""
        return [("kl_coef", value) for value in self.kl_coefs] + [
            ("replay_fraction", value) for value in self.replay_fractions
        ]

    def regimes(self) -> list[Regime]:
        """Every regime, method by method, batch size by batch size, in the order given."""
        rates = {"full": self.full_learning_rates, "lora": self.lora_learning_rates}
        return [
            Regime(method, rate, size) for method in self.methods for size in self.batch_sizes for rate in rates[method]
        ]

    def study(self, finetune_config: str, output_dir: Path, method: str = "full") -> StudyArguments:
        """The study settings of one regime (or, with the base config, of the shared stages): the plain condition
        at `fraction_unknown` with `method`, no thin size, no filtered set, no mitigation. Raises as StudyArguments
        does."""
        return StudyArguments(
            output_dir=str(output_dir),
            pretrain_config=self.pretrain_config,
            finetune_config=finetune_config,
            unknown_fractions=[self.fraction_unknown],
            mitigation_fraction=self.fraction_unknown,  # where the mitigations' settings are tried
            methods=[method],
            finetune_size=self.finetune_size,
            thin_sizes=[],
            filtered_fractions=[],
            mitigations=[],
            lora_learning_rate=None,  # the regime's own, from its config
            eval_epochs=self.eval_epochs,
            probe_samples=self.probe_samples,
            probe_temperature=self.probe_temperature,
            training_seeds=self.training_seeds,
            seed=self.seed,
            num_threads=self.num_threads,
        )


def write_regime_config(args: SweepArguments, regime: Regime, folder: Path) -> Path:
    """`folder/finetune.yaml`: the base fine-tuning config with the regime's learning rate and batch size, trained
    for the whole budget (`eval_epochs[-1]` epochs); the file the regime's runs read and record."""
    settings = yaml.safe_load(Path(args.finetune_config).read_text(encoding="utf-8")) or {}
    settings |= {
        "learning_rate": regime.learning_rate,
        "per_device_train_batch_size": regime.batch_size,
        "num_train_epochs": args.eval_epochs[-1],
    }
    header = f"# Regime {regime.name} of the sweep: {args.finetune_config} with its learning rate, batch and epochs.\n"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "finetune.yaml"
    path.write_text(header + yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return path


def fitted_epoch(per_epoch: list[dict], group: str) -> int | None:
    """The first evaluated epoch at which `FITTED` of the fine-tune examples of `group` (known or unknown) are
    answered exactly, None if none (or the set has no such example: see `fitted_at_end`)."""
    for record in per_epoch:
        share = record.get(f"finetune_{group}_exact_match")
        if share is not None and share >= FITTED:
            return record["epoch"]
    return None


def fitted_at_end(per_epoch: list[dict], group: str) -> bool:
    """Whether `FITTED` of the fine-tune examples of `group` are answered exactly at the last evaluated epoch (True
    for a set without such examples: nothing of that kind is left to fit)."""
    share = per_epoch[-1].get(f"finetune_{group}_exact_match")
    return share is None or share >= FITTED


def run_summary(run: dict) -> dict:
    """One run's early-stopping epoch, fitted epochs and figures at early stop and at its last epoch."""
    per_epoch = run["per_epoch"]
    stop, last = best_epoch(per_epoch), per_epoch[-1]
    at_stop = next(record for record in per_epoch if record["epoch"] == stop)
    figures = (
        "dev_known_accuracy",
        "test_known_accuracy",
        "finetune_unknown_exact_match",
        "finetune_known_exact_match",
    )
    return {
        "training_seed": run["training_seed"],
        "early_stop_epoch": stop,
        "last_epoch": last["epoch"],
        "fitted_epoch": {group: fitted_epoch(per_epoch, group) for group in ("known", "unknown")},
        "fitted_at_end": all(fitted_at_end(per_epoch, group) for group in ("known", "unknown")),
        "early_stop": {key: at_stop[key] for key in figures},
        "convergence": {key: last[key] for key in figures},
        "seconds": run["seconds"],
        "training_seconds": run["timing"]["training"],
    }


def regime_summary(regime: Regime, condition: dict, records: pd.DataFrame) -> dict:
    """What the sweep says of one regime (`condition` its results.json condition, `records` its answers): each
    run's `run_summary`, whether every run converged (both kinds fitted at its last epoch) with room for early
    stopping, the test known accuracy at early stop and at convergence and the late harm (early stop minus
    convergence, paired over people and seeds, with its verdict against `findings.LATE_HARM`, None for a regime
    that did not converge: its harm is no late harm of a fitted model), the same figures on the dev people (no
    verdict: early stop is their best epoch, so their harm is at least 0 by construction), and the mean per-epoch
    figures for the plot."""
    trained = [run for run in condition["runs"] if not run.get("skipped")]
    runs = [run_summary(run) for run in trained]
    stopped = early_stopped(condition)
    converged = bool(runs) and all(run["fitted_at_end"] for run in runs)
    figures = {}
    for split in ("dev", "test"):
        early, final = (asked(runs_at(records, c), split, "known") for c in (stopped, condition))
        figures[split] = {
            "early_stop": rate_interval(early, "accuracy"),
            "convergence": rate_interval(final, "accuracy"),
            "late_harm": difference_interval(early, final, "accuracy"),
        }
    harm = figures["test"]["late_harm"]
    figures["test"]["late_harm_verdict"] = verdict(harm, +1, smallest_effect=LATE_HARM) if converged else None
    unknown_fitted = [run["fitted_epoch"]["unknown"] for run in runs]
    return {
        "regime": regime.name,
        **dataclasses.asdict(regime),
        "runs": runs,
        "converged": converged,
        "room": bool(runs) and all(epoch is not None and epoch >= ROOM_EPOCHS for epoch in unknown_fitted),
        "dev_early_stop_accuracy": sum(r["early_stop"]["dev_known_accuracy"] for r in runs) / max(len(runs), 1),
        **{f"{split}_known_accuracy": figures[split] for split in figures},
        "per_epoch": condition["per_epoch"],
    }


def pick_regimes(summaries: list[dict]) -> dict[str, dict]:
    """Method -> the regime `CHOICE_RULE` picks: `regime`, `batch_size`, `relaxed` (which condition had to be
    dropped, if any) and `tied` (the other regimes of equal dev accuracy that the tie-break passed over). Full
    fine-tuning is picked first; LoRA at its batch size when it ran at one, else at any (`relaxed` says so)."""
    picks = {}
    for method in sorted({s["method"] for s in summaries}):  # "full" before "lora"
        candidates, relaxed = [s for s in summaries if s["method"] == method], []
        if method == "lora" and "full" in picks:
            same_batch = [s for s in candidates if s["batch_size"] == picks["full"]["batch_size"]]
            candidates, relaxed = same_batch or candidates, [] if same_batch else ["batch"]
        for dropped, keep in (
            ([], lambda s: s["converged"] and s["room"]),
            (["room"], lambda s: s["converged"]),
            (["room", "fitting"], lambda s: True),
        ):
            eligible = [s for s in candidates if keep(s)]
            if eligible:
                tied = tied_best(eligible, "dev_early_stop_accuracy")
                pick = max(tied, key=lambda s: (s["batch_size"], -s["learning_rate"]))
                picks[method] = {
                    "regime": pick["regime"],
                    "batch_size": pick["batch_size"],
                    "relaxed": " and ".join(relaxed + dropped) or None,
                    "tied": [s["regime"] for s in tied if s is not pick],
                }
                break
    return picks


def run_sweep(args: SweepArguments) -> Path:
    """Run (or finish: finished runs are reused as the study reuses them) the sweep of `args`; returns its output
    folder, which holds `sweep.json`, `sweep.md`, `sweep.png` and, with mitigation settings, `mitigation_settings.png`
    (see `sweep_report.py`)."""
    out_dir = Path(args.output_dir)
    if args.overwrite_output_dir:
        shutil.rmtree(out_dir, ignore_errors=True)
    planned = []
    for regime in args.regimes():  # every regime's fine-tuning settings checked before minutes of pre-training
        folder = out_dir / "regimes" / regime.name
        study = args.study(str(write_regime_config(args, regime, folder)), folder, regime.method)
        condition_configs(Run(plan_conditions(study)[0], study.training_seeds[0]), study, out_dir / "pretrain")
        planned.append((regime, study))
    args.num_threads = set_num_threads(args.num_threads)
    shared = args.study(args.finetune_config, out_dir)
    pretrain_dir, pretrain_key, _ = pretrain_matching(shared, out_dir)
    if args.replay_fractions:  # the first moment it can be checked, before any fine-tuning
        check_replay_fits(dataclasses.replace(shared, mitigations=["replay"]), pretrain_dir)
    world = load_world(pretrain_dir / "world")
    probe, _ = probe_stage(shared, out_dir, pretrain_dir, pretrain_key, world)
    *epoch0, _ = epoch0_stage(shared, out_dir, pretrain_dir, pretrain_key)
    summaries = []
    for number, (regime, study) in enumerate(planned, start=1):
        print(f"sweep: regime {number}/{len(planned)}: {regime.name}", flush=True)
        folder = Path(study.output_dir)
        results, _ = conditions_stage(study, folder, pretrain_dir, world, probe, tuple(epoch0))
        (condition,) = results.values()
        records, _ = collect_records([condition], folder)
        summaries.append(regime_summary(regime, condition, records))
    picks = pick_regimes(summaries)
    settings = []
    if args.mitigation_values():
        full = next(study for regime, study in planned if regime.name == picks["full"]["regime"])
        stages = (pretrain_dir, world, probe, tuple(epoch0))
        settings = run_settings(args.mitigation_values(), full, out_dir, stages)
    sweep = {
        "config": run_config_sections(args)["SweepArguments"],
        "fitted_share": FITTED,
        "room_epochs": ROOM_EPOCHS,
        "late_harm_bar": LATE_HARM,
        "choice_rule": CHOICE_RULE,
        "regimes": summaries,
        "picks": picks,
        "setting_rule": SETTING_RULE,
        "mitigation_settings": settings,
        "setting_picks": pick_settings(settings),
    }
    write_json(sweep, out_dir / "sweep.json")  # first: the report is made from it, and can be made again
    write_sweep_report(sweep, out_dir)
    print(f"sweep: picks {picks} and {sweep['setting_picks']}; wrote sweep.json, sweep.md and its plots in {out_dir}")
    return out_dir


__all__ = [
    "CHOICE_RULE",
    "FITTED",
    "ROOM_EPOCHS",
    "Regime",
    "SweepArguments",
    "fitted_at_end",
    "fitted_epoch",
    "pick_regimes",
    "regime_summary",
    "run_summary",
    "run_sweep",
    "write_regime_config",
]
