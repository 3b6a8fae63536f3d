"""Every setting of a study checked before anything runs: the study's own (`StudyArguments` checks them when built),
the pre-training config it names, the world that config makes (big enough for every fine-tune set the study draws
and for a dev and a test half), and the fine-tuning settings of every planned run.

A mistake found here costs a second; found at its condition, it would cost the minutes of pre-training before it.
"""

from pathlib import Path

from transformers import TrainingArguments
from trl import SFTConfig

from ..run_config import parse_run_config
from ..training.defaults import check_trainer_settings
from ..training.finetuning import DEFAULTS as FINETUNE_DEFAULTS
from ..training.finetuning import FinetuneArguments
from ..training.pretraining import DEFAULTS as PRETRAIN_DEFAULTS
from ..training.pretraining import PretrainArguments, world_config
from ..world import draw_finetune_set, generate_world, load_world, to_dataset_dict
from .conditions import condition_configs, dev_test_splits
from .config import Run, StudyArguments, plan_conditions

# What a study's output folder holds once it has run (a study over seeds: seed_<S>/pretrain).
STUDY_MARKS = ("pretrain", "probe.json", "epoch0.json", "conditions", "results.json", "seeds.json")


def pretrain_configs(args: StudyArguments, out_dir: Path) -> tuple[PretrainArguments, TrainingArguments]:
    """The pre-training settings of the study writing into `out_dir`: its `pretrain_config` in `out_dir/pretrain`,
    and under `seeds` with the world and initialisation of `args.seed`."""
    overrides: dict = {"output_dir": str(out_dir / "pretrain")}
    if args.seeds:  # a study over seeds: each run draws its own world and initialisation
        overrides |= {"seed": args.seed, "world_seed": args.seed}
    types = (PretrainArguments, TrainingArguments)
    return parse_run_config(types, [args.pretrain_config], PRETRAIN_DEFAULTS, overrides, prog=args.pretrain_config)


def check_study(args: StudyArguments) -> None:
    """Check what `run_study(args)` would run, without running any of it: `check_world`, then the fine-tuning
    settings of every planned run.

    Raises:
        FileNotFoundError, ValueError: as `check_world`, and for a fine-tuning setting its dataclass refuses or an
            evaluation schedule that does not end with the fine-tuning's last epoch.
    """
    check_output(args)
    check_world(args)
    _, sft_config = parse_run_config(
        (FinetuneArguments, SFTConfig), [args.finetune_config], FINETUNE_DEFAULTS, prog=args.finetune_config
    )
    check_trainer_settings(sft_config, args.finetune_config)  # before the runs' schedules divide by its batch
    pretrain_dir = Path(args.output_dir) / "pretrain"
    for condition in plan_conditions(args):  # the settings differ by method and size, not by training seed
        condition_configs(Run(condition, args.training_seeds[0]), args, pretrain_dir)


def check_world(args: StudyArguments) -> None:
    """Check the config files the study names and the world its pre-training makes (or reads): big enough for
    every planned fine-tune set and for a dev and a test half.

    Raises:
        FileNotFoundError: if a config file the study names is missing.
        ValueError: naming the setting, its value and what is allowed: a pre-training setting its dataclass (or
            `WorldConfig`) refuses, a pre-training on a corpus of the user's instead of a world, a world too small.
    """
    for name in ("pretrain_config", "finetune_config"):
        if not Path(getattr(args, name)).is_file():
            raise FileNotFoundError(f"StudyArguments.{name} is {getattr(args, name)!r}; allowed: an existing YAML file")
    pretrain_args, training_args = pretrain_configs(args, Path(args.output_dir))
    check_trainer_settings(training_args, args.pretrain_config)
    if pretrain_args.train_files is not None:
        raise ValueError(
            f"{args.pretrain_config} sets train_files: the study needs a world, whose every fact it knows; "
            "allowed: a pre-training config on a world (world_dir, or num_people and world_seed)"
        )
    if pretrain_args.world_dir is not None:
        world = load_world(pretrain_args.world_dir)
    else:  # the world pre-training will make (under `seeds`, the first seed's: every seed's has the same sizes)
        world = generate_world(world_config(pretrain_args))
    dev_test_splits(to_dataset_dict(world))
    for condition in plan_conditions(args):
        try:
            draw_finetune_set(world, condition.finetune_size, condition.fraction_unknown, seed=0)
        except ValueError as error:
            raise ValueError(f"StudyArguments plans {condition.name}, but {error}") from None


def check_output(args: StudyArguments) -> None:
    """Refuse an `output_dir` that is a file, and an overwrite that would delete a folder that is not a study's
    (`--output_dir . --overwrite_output_dir true` would delete the working folder) or the configs it reads.

    Raises:
        FileExistsError: if `output_dir` is a file.
        ValueError: for such an overwrite.
    """
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"StudyArguments.output_dir {out} is a file; allowed: a folder, or a path to nothing")
    if not (args.overwrite_output_dir and out.is_dir() and any(out.iterdir())):
        return
    if not any((out / mark).exists() for mark in STUDY_MARKS) and not any(out.glob("seed_*/pretrain")):
        raise ValueError(
            f"StudyArguments.overwrite_output_dir would delete {out}, which holds no study; allowed: a study's "
            "output folder, an empty one, or none"
        )
    for config in (args.pretrain_config, args.finetune_config):
        if Path(config).resolve().is_relative_to(out.resolve()):
            raise ValueError(f"StudyArguments.overwrite_output_dir would delete {out}, which holds {config}")


__all__ = ["check_output", "check_study", "check_world", "pretrain_configs"]
