"""One condition of the study: draw its fine-tune set, fine-tune past convergence, and record the factuality figures
after every epoch on the fine-tune set and on people never fine-tuned on (how well the model's own signals tell its
right answers from its hallucinations is judged afterwards, from what the run saved: `detection.py`).

The held-out people of the world are split in two by person: `dev` (for choosing, e.g. the early-stopping epoch)
and `test` (the figures the study reports, `test_*`), so that nothing reported was used to choose.
"""

import math
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd
from transformers import AutoTokenizer, TrainerCallback, TrainerState
from trl import SFTConfig

from ..factuality.world_schema import ABSTAIN_ANSWER, format_answer
from ..run_config import parse_run_config
from ..scoring import score_answers
from ..training.console import Summary, use_console_progress
from ..training.finetuning import DEFAULTS as FINETUNE_DEFAULTS
from ..training.finetuning import FinetuneArguments, build_trainer, loss_rows, save_finetuned
from ..world import PRETRAIN_SPLIT, World, draw_finetune_set, load_world_datasets, qa_split_name
from .config import Condition, Run, StudyArguments
from .error_sources import error_sources, taught_values, world_values
from .records import evaluation_records, per_epoch_figures


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
    if condition.mitigation not in ("filter_unknown", "abstention"):  # the others change the training, not the set
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


def condition_summary(run_name: str) -> Summary:
    """A run's line per evaluation: where it stands on its fine-tune set and on the held-out test people."""

    def summary(state: TrainerState, metrics: dict[str, float]) -> str:
        figures = {k: metrics.get(f"eval_{k}_exact_match") for k in ("finetune_known", "finetune_unknown")}
        fitted = ", ".join(f"{k.split('_')[1]} {v:.2f}" for k, v in figures.items() if v is not None)
        return (
            f"study: {run_name} epoch {state.epoch:.0f}: fitted {fitted}; held-out known accuracy "
            f"{metrics['eval_test_known_accuracy']:.2f}, unknown hallucination "
            f"{metrics['eval_test_unknown_hallucination_rate']:.2f}"
        )

    return summary


def training_mitigation(condition: Condition, args: StudyArguments) -> dict[str, float]:
    """The fine-tuning settings a mitigation that changes the training sets (`FinetuneArguments` fields): the KL
    penalty's weight or the replayed share; none for the others."""
    settings = {"kl_penalty": {"kl_coef": args.kl_coef}, "replay": {"replay_fraction": args.replay_fraction}}
    return settings.get(condition.mitigation, {})


def check_replay_fits(args: StudyArguments, pretrain_dir: Path) -> None:
    """A replay run trains whole pre-training documents (with their end), which must fit the fine-tuning
    `max_length`: checked as soon as the pre-trained tokenizer exists (the lengths are its tokens), before any
    fine-tuning, rather than at the replay run.

    Raises:
        ValueError: naming the fine-tuning config, its `max_length` and the length it needs.
    """
    if "replay" not in args.mitigations:
        return
    _, sft_config = parse_run_config(
        (FinetuneArguments, SFTConfig), [args.finetune_config], FINETUNE_DEFAULTS, prog=args.finetune_config
    )
    tokenizer = AutoTokenizer.from_pretrained(pretrain_dir / "model")
    texts = list(load_world_datasets(pretrain_dir / "world")[PRETRAIN_SPLIT]["text"])
    longest = 1 + max(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    if sft_config.max_length is not None and longest > sft_config.max_length:
        raise ValueError(
            f"{args.finetune_config}: max_length is {sft_config.max_length}, but the replay mitigation trains whole "
            f"pre-training documents of up to {longest} tokens with their end; allowed: max_length >= {longest}, or "
            "no replay"
        )


def condition_configs(run: Run, args: StudyArguments, pretrain_dir: Path) -> tuple[FinetuneArguments, SFTConfig]:
    """The fine-tuning settings of one run: the study's fine-tuning config with the condition's model, data, method,
    the run's training seed (batch order, adapter initialisation) and output folder, and an evaluation at the end of
    each epoch (`EvaluateAtEpochs` keeps those of `evaluation_epochs`), all checked by the dataclasses themselves; a
    thin set trains for as many optimizer steps as a `finetune_size` set (`equal_step_epochs`)

    Raises:
        ValueError: if `eval_epochs` does not end with the fine-tuning's last epoch (the model it ends with would go
            unevaluated).
    """
    condition = run.condition
    overrides = {
        "model_dir": str(pretrain_dir / "model"),
        "world_dir": str(pretrain_dir / "world"),
        "output_dir": str(Path(args.output_dir) / run.folder),
        "use_lora": condition.method == "lora",
        "seed": run.training_seed,
        "eval_strategy": "epoch",
        "save_strategy": "no",
    }
    if condition.method == "lora" and args.lora_learning_rate is not None:
        overrides["learning_rate"] = args.lora_learning_rate
    overrides |= training_mitigation(condition, args)
    finetune_args, sft_config = parse_run_config(
        (FinetuneArguments, SFTConfig), [args.finetune_config], FINETUNE_DEFAULTS, overrides, prog=args.finetune_config
    )
    if args.eval_epochs[-1] != sft_config.num_train_epochs:
        raise ValueError(
            f"eval_epochs={args.eval_epochs} must end with the last epoch, num_train_epochs="
            f"{sft_config.num_train_epochs:g} of {args.finetune_config}, so that the model a run ends with is evaluated"
        )
    sft_config.num_train_epochs = evaluation_epochs(condition, args, _batch_size(sft_config))[-1]
    return finetune_args, sft_config


def _batch_size(sft_config: SFTConfig) -> int:
    """Questions per optimizer step (the study runs in one process)."""
    return sft_config.per_device_train_batch_size * sft_config.gradient_accumulation_steps


def equal_step_epochs(epochs: list[int], base_size: int, size: int, batch_size: int) -> list[int]:
    """The epochs at which a fine-tune set of `size` questions has taken as many optimizer steps as a set of
    `base_size` questions after each of `epochs` (ceil(size / batch_size) steps an epoch; rounded to the nearest
    epoch, halves up, at least 1), with the last of `epochs` too (equal epochs) when it comes before the last of
    those, in order: a thin set trained to the last is compared with the larger set at equal steps and at equal
    epochs, and evaluated about as often as the larger set."""
    base_steps, steps = math.ceil(base_size / batch_size), math.ceil(size / batch_size)
    matched = [max(1, math.floor(epoch * base_steps / steps + 0.5)) for epoch in epochs]
    return sorted(set(matched) | ({epochs[-1]} if epochs[-1] <= matched[-1] else set()))


def run_evaluation_epochs(run: Run, args: StudyArguments, pretrain_dir: Path) -> list[int]:
    """`evaluation_epochs` of `run`, with the batch size of its fine-tuning config."""
    return evaluation_epochs(run.condition, args, _batch_size(condition_configs(run, args, pretrain_dir)[1]))


def evaluation_epochs(condition: Condition, args: StudyArguments, batch_size: int) -> list[int]:
    """The epochs a run of `condition` is evaluated after, the last its last: `args.eval_epochs`, or for a set of
    another size than `args.finetune_size` (a thin size) `equal_step_epochs` of them."""
    if condition.finetune_size == args.finetune_size:
        return list(args.eval_epochs)
    return equal_step_epochs(args.eval_epochs, args.finetune_size, condition.finetune_size, batch_size)


class EvaluateAtEpochs(TrainerCallback):
    """Keeps the Trainer's end-of-epoch evaluation (`eval_strategy="epoch"`) only after the given epochs."""

    def __init__(self, epochs: list[int]):
        self.epochs = set(epochs)

    def on_epoch_end(self, args, state, control, **kwargs):
        control.should_evaluate = control.should_evaluate and round(state.epoch) in self.epochs
        return control


def run_finetuning(
    run: Run,
    args: StudyArguments,
    pretrain_dir: Path,
    world: World,
    probe: dict,
    held_out: HeldOutQuestions,
    epoch0: dict[str, tuple[str, float]],
) -> tuple[dict, list[dict]]:
    """Fine-tune one run (a condition under one training seed) and return its result and its per-answer records
    (`records.evaluation_records`), epoch 0 (`epoch0`: prompt -> the pre-trained model's answer and confidence)
    included; saves the fine-tuned model (or adapter) in its `saved` folder, relative to the study's output folder.
    The result's `per_epoch` figures are computed from the records (`records.per_epoch_figures`)."""
    start = time.perf_counter()
    condition = run.condition
    rows = finetune_rows(world, condition, probe, run.training_seed)
    if len(rows) == 0:
        print(f"study: {run.name}: no fine-tune example left (the probe found every drawn fact unknown); skipped")
        return {"training_seed": run.training_seed, "num_examples": 0, "set_sizes": {}, "per_epoch": [],
                "detector": None, "saved": None, "optimizer_steps": 0, "skipped": True}, []  # fmt: skip
    finetune_args, sft_config = condition_configs(run, args, pretrain_dir)
    sets = {f"finetune_{g}": rows.filter(lambda x, g=g: x == g, input_columns="group") for g in ("known", "unknown")}
    sets = {name: questions for name, questions in {**sets, **held_out.halves}.items() if len(questions)}
    trainer = build_trainer(
        finetune_args, sft_config, rows.rename_column("answer", "completion"), sets, eval_dataset=held_out.loss_rows
    )
    trainer.add_callback(EvaluateAtEpochs(evaluation_epochs(condition, args, _batch_size(sft_config))))
    use_console_progress(trainer, condition_summary(run.name))
    train_seconds = trainer.train().metrics["train_runtime"]
    save_start = time.perf_counter()
    saved = save_finetuned(trainer, finetune_args, Path(sft_config.output_dir))
    marks = (start, save_start, time.perf_counter())
    records = run_records(run, sets, trainer.answer_history, epoch0, probe)
    sources = error_sources(records, taught_values(rows.to_list()), world_values(world))
    truths = {(p.person_id, a): format_answer(v).strip() for p in world.people for a, v in p.attributes.items()}
    records = [
        record | source | {"truth": truths[(record["person_id"], record["attribute"])]}
        for record, source in zip(records, sources, strict=True)
    ]
    return {
        "training_seed": run.training_seed,
        "num_examples": len(rows),
        "num_trained_examples": len(trainer.train_dataset),  # with replay, the questions and the replayed text
        "set_sizes": {name: len(questions) for name, questions in sets.items()},
        "trainable_share": trainer.model.num_parameters(only_trainable=True) / trainer.model.num_parameters(),
        "optimizer_steps": trainer.state.global_step,
        "per_epoch": per_epoch_figures(pd.DataFrame(records)),
        "detector": None,  # `detection.detector_stage` judges the saved model's detectors
        "saved": saved.relative_to(args.output_dir).as_posix(),  # found again wherever the study is resumed from
        "seconds": marks[-1] - start,
        "timing": _timing(marks, train_seconds, trainer.state.log_history),
        # The training loss (and the KL penalty's term, where there is one) at each logging step.
        "train_log": [
            {key: entry[key] for key in ("epoch", "loss", "kl_to_pretrained") if key in entry}
            for entry in trainer.state.log_history
            if "loss" in entry
        ],
    }, records


def run_records(
    run: Run,
    sets: dict[str, datasets.Dataset],
    answer_history: list[dict],
    epoch0: dict[str, tuple[str, float]],
    probe: dict,
) -> list[dict]:
    """Every answer of one run on record: epoch 0 from the pre-trained model's answers (`epoch0`, scored against each
    set's own references, e.g. the abstention run's targets), then each evaluation of `answer_history`."""
    categories = {(f["person_id"], f["attribute"]): f["category"] for f in probe["facts"]}
    start = {}
    for name, questions in sets.items():
        answered = [epoch0[prompt] for prompt in questions["prompt"]]
        start[name] = score_answers(questions, [a for a, _ in answered], [c for _, c in answered])["answers"]
    evaluations = [(0, start)] + [(round(entry["epoch"]), entry["sets"]) for entry in answer_history]
    records = []
    for epoch, answers in evaluations:
        records += evaluation_records(answers, run.condition.name, run.training_seed, epoch, categories)
    return records


def _timing(marks: tuple[float, float, float], train_seconds: float, log_history: list[dict]) -> dict:
    """Where a run's seconds went, from the clock at its start, at the save and at its end."""
    start, save_start, end = marks
    # The Trainer's runtime includes its evaluations (each logs its own eval_runtime).
    evaluating = sum(entry.get("eval_runtime", 0.0) for entry in log_history)
    return {
        "setup": save_start - start - train_seconds,
        "training": train_seconds - evaluating,
        "evaluation": evaluating,
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


def mean_per_epoch(runs: list[dict]) -> list[dict]:
    """The per-epoch figures averaged over `runs` (each run's `per_epoch`, on the same epochs): a figure undefined in
    some runs (AUROC without a wrong answer) is the mean of the others, None in all."""
    records = []
    for same_epoch in zip(*(run["per_epoch"] for run in runs), strict=True):
        record = {}
        for key in same_epoch[0]:
            values = [r[key] for r in same_epoch if r[key] is not None]
            mean = sum(values) / len(values) if values else None
            # An epoch the runs share stays a whole number (early stopping's differ and average).
            record[key] = values[0] if values and all(v == values[0] for v in values) else mean
        records.append(record)
    return records


def condition_result(condition: Condition, runs: list[dict]) -> dict:
    """One condition of results.json from its runs (one per training seed, `run_finetuning`'s results): `runs`, and
    for the plots, tables and cards that show one curve per condition, `per_epoch` averaged over the runs
    (`mean_per_epoch`); `set_sizes`, `detector` and `saved` are the first run's (the dev and test sets are the same in
    every run). Skipped when every run was."""
    trained = [run for run in runs if not run.get("skipped")]
    if not trained:
        return {**_description(condition), "runs": runs, "num_examples": 0, "set_sizes": {}, "per_epoch": [],
                "detector": None, "saved": None, "skipped": True}  # fmt: skip
    timing: dict[str, float] = {}
    for run in trained:
        for part, seconds in run["timing"].items():
            timing[part] = timing.get(part, 0.0) + seconds
    return {
        **_description(condition),
        "training_seeds": [run["training_seed"] for run in trained],
        "runs": runs,
        "num_examples": trained[0]["num_examples"],
        "set_sizes": trained[0]["set_sizes"],
        "per_epoch": mean_per_epoch(trained),
        "detector": trained[0]["detector"],
        "saved": trained[0]["saved"],
        "seconds": sum(run["seconds"] for run in trained),
        "timing": timing,
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


def best_epoch(per_epoch: list[dict], criterion: str = "dev_known_accuracy") -> int:
    """The fine-tuned epoch (1 or later) with the best `criterion` (a per-epoch key), the earliest of ties: the
    checkpoint that `load_best_model_at_end` keeps with the matching `metric_for_best_model` (a test checks this)."""
    trained = [record for record in per_epoch if record["epoch"] >= 1]
    scores = [record[criterion] for record in trained]
    return trained[scores.index(max(scores))]["epoch"]


def early_stopped(plain: dict, criterion: str = "dev_known_accuracy") -> dict:
    """The early-stopping mitigation read off a plain condition: each run stopped at its own `best_epoch`, and
    `per_epoch` one record, the mean over the runs of their figures at that epoch (`selected_epochs` by seed)."""
    runs = []
    for run in plain["runs"]:
        if run.get("skipped"):
            continue
        epoch = best_epoch(run["per_epoch"], criterion)
        runs.append({**run, "selected_epoch": epoch, "per_epoch": [r for r in run["per_epoch"] if r["epoch"] <= epoch]})
    stopped = mean_per_epoch([{"per_epoch": run["per_epoch"][-1:]} for run in runs])
    return {
        **plain,
        "name": plain["name"].replace("_none", "_early_stopping"),
        "mitigation": "early_stopping",
        "records_of": plain["name"],  # its records are the plain condition's, at each seed's selected epoch
        "runs": runs,
        "selected_epochs": {str(run["training_seed"]): run["selected_epoch"] for run in runs},
        "per_epoch": stopped,
        "detector": None,  # the plain run's detector scored its last epoch, not this one
        "saved": None,  # nor is its saved model this epoch's
        "timing": {},  # read off the plain run: no time of its own
        "seconds": 0.0,
    }


__all__ = [
    "HeldOutQuestions",
    "best_epoch",
    "condition_configs",
    "EvaluateAtEpochs",
    "condition_result",
    "dev_net_factuality",
    "dev_test_splits",
    "early_stopped",
    "equal_step_epochs",
    "evaluation_epochs",
    "finetune_rows",
    "run_evaluation_epochs",
    "mean_per_epoch",
    "run_finetuning",
    "run_records",
]
