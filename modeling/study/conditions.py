"""One condition of the study: draw its fine-tune set, fine-tune past convergence, and record the factuality figures
after every epoch on the fine-tune set and on people never fine-tuned on, and at the end how well the model's own
signals tell its right answers from its hallucinations (`detector.py`).

The held-out people of the world are split in two by person: `dev` (for choosing, e.g. the early-stopping epoch)
and `test` (the figures the study reports, `test_*`), so that nothing reported was used to choose.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
from transformers import TrainerCallback
from trl import SFTConfig

from ..factuality.world_schema import ABSTAIN_ANSWER, format_answer
from ..run_config import parse_run_config
from ..training.factuality_trainer import FactualitySFTTrainer
from ..training.finetuning import DEFAULTS as FINETUNE_DEFAULTS
from ..training.finetuning import FinetuneArguments, build_trainer, loss_rows, save_finetuned
from ..training.precision import float32_forward
from ..world import World, draw_finetune_set, load_world_datasets, qa_split_name
from .config import Condition, StudyArguments
from .detector import Answers, evaluate_detectors

RECORDED_FIGURES = ("accuracy", "hallucination_rate", "abstention_rate", "auroc")


def dev_test_splits(splits: datasets.DatasetDict) -> dict[str, datasets.Dataset]:
    """`dev_known`, `dev_unknown`, `test_known`, `test_unknown`: the held-out questions of the world's `splits`, split
    by person: in order of id, every other person goes to dev and the rest to test (ids are drawn at random, so both
    halves mix every exposure, and their sizes differ by one person at most).

    Raises:
        ValueError: if a group has fewer than two held-out people.
    """
    halves = {}
    for group in ("known", "unknown"):
        rows = splits[qa_split_name(group, "heldout")]
        people = sorted(set(rows["person_id"]))
        if len(people) < 2:
            raise ValueError(
                f"The world holds {len(people)} held-out {group} people; the study needs at least 2 (one for dev, one "
                "for test): raise num_people or the world's heldout_fraction"
            )
        dev = set(people[::2])
        halves[f"dev_{group}"] = rows.filter(lambda person_id, dev=dev: person_id in dev, input_columns="person_id")
        halves[f"test_{group}"] = rows.filter(
            lambda person_id, dev=dev: person_id not in dev, input_columns="person_id"
        )
    return halves


@dataclass(frozen=True)
class HeldOutQuestions:
    """The questions about the world's held-out people that every condition's evaluations read, loaded once per
    study: `halves` (see `dev_test_splits`) and `loss_rows`, the held-out known people's answers as
    prompt/completion, on which each evaluation takes the loss."""

    halves: dict[str, datasets.Dataset]
    loss_rows: datasets.Dataset

    @classmethod
    def load(cls, world_dir: str | Path) -> "HeldOutQuestions":
        """From the world saved in `world_dir`; raises ValueError as `dev_test_splits` does."""
        splits = load_world_datasets(world_dir)
        return cls(dev_test_splits(splits), loss_rows(splits))


def finetune_rows(world: World, condition: Condition, probe: dict, seed: int) -> datasets.Dataset:
    """The condition's fine-tune set, with the world's QA columns and `answer` as the training target.

    `filter_unknown` drops the questions whose fact the probe found unknown; `abstention` answers them
    " I don't know" instead (R-Tuning, Zhang et al. 2024, with the probe deciding what the model does not know).
    """
    drawn = draw_finetune_set(world, condition.finetune_size, condition.fraction_unknown, seed)
    if condition.mitigation == "none":
        return drawn
    unknown = {(f["person_id"], f["attribute"]) for f in probe["facts"] if f["category"] == "unknown"}

    def probed_unknown(person_id: int, attribute: str) -> bool:
        return (person_id, attribute) in unknown

    if condition.mitigation == "filter_unknown":
        return drawn.filter(lambda p, a: not probed_unknown(p, a), input_columns=["person_id", "attribute"])
    abstain = format_answer(ABSTAIN_ANSWER)
    return drawn.map(
        lambda row: {"answer": abstain if probed_unknown(row["person_id"], row["attribute"]) else row["answer"]}
    )


class ConditionProgress(TrainerCallback):
    """One line per evaluation: where the condition stands."""

    def __init__(self, name: str):
        self.name = name

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        figures = {k: metrics.get(f"eval_{k}_exact_match") for k in ("finetune_known", "finetune_unknown")}
        fitted = ", ".join(f"{k.split('_')[1]} {v:.2f}" for k, v in figures.items() if v is not None)
        print(
            f"study: {self.name} epoch {state.epoch:.0f}: fitted {fitted}; held-out known accuracy "
            f"{metrics['eval_test_known_accuracy']:.2f}, unknown hallucination "
            f"{metrics['eval_test_unknown_hallucination_rate']:.2f}",
            flush=True,
        )


def per_epoch_records(log_history: list[dict], set_sizes: dict[str, int]) -> list[dict]:
    """The study's per-epoch record from each evaluation of `log_history` (see results.json in the README)."""
    records = []
    for entry in (e for e in log_history if "eval_loss" in e):
        fitted = {group: entry.get(f"eval_finetune_{group}_exact_match") for group in ("known", "unknown")}
        counted = [(fitted[g], set_sizes.get(f"finetune_{g}", 0)) for g in fitted if fitted[g] is not None]
        record = {
            "epoch": round(entry["epoch"]),
            "finetune_exact_match": sum(v * n for v, n in counted) / sum(n for _, n in counted),
            "finetune_known_exact_match": fitted["known"],
            "finetune_unknown_exact_match": fitted["unknown"],
        }
        for half in ("test", "dev"):
            for group in ("known", "unknown"):
                for figure in RECORDED_FIGURES:
                    record[f"{half}_{group}_{figure}"] = entry.get(f"eval_{half}_{group}_{figure}")
            for category in ("highly_known", "weakly_known"):
                record[f"{half}_{category}_accuracy"] = entry.get(f"eval_{half}_known_{category}_accuracy")
        records.append(record)
    return records


def condition_configs(
    condition: Condition, args: StudyArguments, pretrain_dir: Path, num_examples: int
) -> tuple[FinetuneArguments, SFTConfig]:
    """The fine-tuning settings of one condition: the study's fine-tuning config with the condition's model, data,
    method, seed and output folder, and an evaluation every `args.eval_every` epochs (counted in optimizer steps of
    `num_examples` examples), all checked by the dataclasses themselves.

    Raises:
        ValueError: if `eval_every` does not divide the fine-tuning's epochs (the last epoch would go unevaluated).
    """
    overrides = {
        "model_dir": str(pretrain_dir / "model"),
        "world_dir": str(pretrain_dir / "world"),
        "output_dir": str(Path(args.output_dir) / "conditions" / condition.name),
        "use_lora": condition.method == "lora",
        "seed": args.seed,
        "save_strategy": "no",
        "report_to": "none",
    }
    if condition.method == "lora" and args.lora_learning_rate is not None:
        overrides["learning_rate"] = args.lora_learning_rate
    types = (FinetuneArguments, SFTConfig)
    _, sft_config = parse_run_config(types, [args.finetune_config], FINETUNE_DEFAULTS, overrides)
    if sft_config.num_train_epochs % args.eval_every:
        raise ValueError(
            f"eval_every={args.eval_every} must divide num_train_epochs={sft_config.num_train_epochs} of "
            f"{args.finetune_config}, so that the last epoch is evaluated"
        )
    sequences_per_step = sft_config.per_device_train_batch_size * sft_config.world_size
    steps_per_epoch = math.ceil(math.ceil(num_examples / sequences_per_step) / sft_config.gradient_accumulation_steps)
    overrides |= {"eval_strategy": "steps", "eval_steps": steps_per_epoch * args.eval_every}
    return parse_run_config(types, [args.finetune_config], FINETUNE_DEFAULTS, overrides)


def run_condition(
    condition: Condition,
    args: StudyArguments,
    pretrain_dir: Path,
    world: World,
    probe: dict,
    held_out: HeldOutQuestions,
) -> dict:
    """Fine-tune one condition and return its result (see `per_epoch_records`); saves the fine-tuned model (or
    adapter) in `conditions/<name>/`, its `saved` folder, relative to the study's output folder."""
    start = time.perf_counter()
    rows = finetune_rows(world, condition, probe, args.seed)
    if len(rows) == 0:
        print(f"study: {condition.name}: no fine-tune example left (the probe found every drawn fact unknown); skipped")
        return {**_description(condition), "num_examples": 0, "set_sizes": {}, "per_epoch": [], "detector": None,
                "saved": None, "skipped": True}  # fmt: skip
    finetune_args, sft_config = condition_configs(condition, args, pretrain_dir, len(rows))
    sets = {f"finetune_{g}": rows.filter(lambda x, g=g: x == g, input_columns="group") for g in ("known", "unknown")}
    sets = {name: questions for name, questions in {**sets, **held_out.halves}.items() if len(questions)}
    trainer = build_trainer(
        finetune_args, sft_config, rows.rename_column("answer", "completion"), sets, eval_dataset=held_out.loss_rows
    )
    trainer.add_callback(ConditionProgress(condition.name))
    train_seconds = trainer.train().metrics["train_runtime"]
    detector_start = time.perf_counter()
    dev, test = (
        datasets.concatenate_datasets([held_out.halves[f"{half}_known"], held_out.halves[f"{half}_unknown"]])
        for half in ("dev", "test")
    )
    with float32_forward(trainer.model) as model:
        detector = evaluate_detectors(
            model, trainer.processing_class, dev, test, args.seed, *_last_answers(trainer, ("dev", "test"))
        )
    save_start = time.perf_counter()
    saved = save_finetuned(trainer, finetune_args, Path(sft_config.output_dir))
    marks = (start, detector_start, save_start, time.perf_counter())
    set_sizes = {name: len(questions) for name, questions in sets.items()}
    return {
        **_description(condition),
        "num_examples": len(rows),
        "set_sizes": set_sizes,
        "trainable_share": trainer.model.num_parameters(only_trainable=True) / trainer.model.num_parameters(),
        "per_epoch": per_epoch_records(trainer.state.log_history, set_sizes),
        # Of the model at the last epoch, on the held-out dev (to fit) and test people (to score).
        "detector": detector,
        "saved": saved.relative_to(args.output_dir).as_posix(),  # found again wherever the study is resumed from
        "seconds": marks[-1] - start,
        "timing": _timing(marks, train_seconds, trainer.state.log_history),
    }


def _last_answers(trainer: FactualitySFTTrainer, halves: tuple[str, ...]) -> list[Answers | None]:
    """The predictions and confidences of each half (known then unknown people, as `run_condition` concatenates
    them) from the trainer's last evaluation, if it evaluated the model it ends with; else None each (generate)."""
    latest = trainer.latest_answers
    if latest is None or latest["step"] != trainer.state.global_step:
        return [None] * len(halves)
    answers = [[*latest["sets"][f"{half}_known"], *latest["sets"][f"{half}_unknown"]] for half in halves]
    return [([a["prediction"] for a in rows], [a["confidence"] for a in rows]) for rows in answers]


def _timing(marks: tuple[float, float, float, float], train_seconds: float, log_history: list[dict]) -> dict:
    """Where a condition's seconds went, from the clock at its start, at the detector, at the save and at its end."""
    start, detector_start, save_start, end = marks
    # The Trainer's runtime includes its evaluations (each logs its own eval_runtime).
    evaluating = sum(entry.get("eval_runtime", 0.0) for entry in log_history)
    return {
        "setup": detector_start - start - train_seconds,
        "training": train_seconds - evaluating,
        "evaluation": evaluating,
        "detector": save_start - detector_start,
        "save": end - save_start,
    }


def _description(condition: Condition) -> dict:
    return {
        "name": condition.name,
        "fraction_unknown": condition.fraction_unknown,
        "method": condition.method,
        "mitigation": condition.mitigation,
        "finetune_size": condition.finetune_size,
    }


def dev_net_factuality(condition: dict) -> float:
    """(correct - hallucinated answers) / questions on the dev people at the last epoch, known and unknown pooled: an
    abstention scores 0, between a right and a wrong answer (the criterion of the selective-answering threshold too).
    """
    record, sizes = condition["per_epoch"][-1], condition["set_sizes"]
    net = total = 0.0
    for group in ("known", "unknown"):
        size = sizes.get(f"dev_{group}", 0)
        if size:
            net += (record[f"dev_{group}_accuracy"] - record[f"dev_{group}_hallucination_rate"]) * size
            total += size
    return net / total


def early_stopped(plain: dict, criterion: str = "dev_known_accuracy") -> dict:
    """The early-stopping mitigation read off a plain run: the epoch with the best `criterion` (a per-epoch record
    key; by default the dev accuracy on known people), the earliest of ties: the checkpoint that
    `load_best_model_at_end` keeps with the matching `metric_for_best_model` (a test checks this)."""
    scores = [record[criterion] for record in plain["per_epoch"]]
    best = scores.index(max(scores))
    return {
        **plain,
        "name": plain["name"].replace("_none", "_early_stopping"),
        "mitigation": "early_stopping",
        "selected_epoch": plain["per_epoch"][best]["epoch"],
        "per_epoch": plain["per_epoch"][: best + 1],
        "detector": None,  # the plain run's detector scored its last epoch, not this one
        "saved": None,  # nor is its saved model this epoch's
        "timing": {},  # read off the plain run: no time of its own
        "seconds": 0.0,
    }


__all__ = [
    "dev_net_factuality",
    "early_stopped",
    "finetune_rows",
    "HeldOutQuestions",
    "dev_test_splits",
    "per_epoch_records",
    "condition_configs",
    "run_condition",
]
