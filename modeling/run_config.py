"""Run configuration: dataclass defaults, overridden by an embedded default, a YAML file in configs/, then flags.

Every run writes the configuration it resolved to `run_config.yaml` in its output folder, so any result can be
traced back to the exact settings that produced it.
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .training.precision import native_bf16

# Settings that may be given as "auto" (in a file, an override or a flag): the value this machine should use.
AUTO_SETTINGS = {"bf16": native_bf16}


@dataclass
class RunArguments:
    """Settings every run has, whatever it trains (the pre-training and fine-tuning arguments extend it)."""

    num_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads per process; default: OMP_NUM_THREADS when set (accelerate launch sets it, to 1 "
            "unless told otherwise), else the cores free at the start (the run config records the number used)"
        },
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "replace a finished run in output_dir instead of stopping"}
    )


def parse_run_config(
    dataclass_types: tuple[type, ...],
    argv: list[str],
    defaults: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Any, ...]:
    """Build the dataclasses from `defaults`, then an optional YAML file given as the first argument, then
    `overrides` (typed values, as code sets them), then `--field value` flags; each dataclass then checks the whole
    (e.g. `TrainingArguments.__post_init__`). Unknown keys, in the file, the overrides or as flags, are an error.
    A setting of `AUTO_SETTINGS` given as "auto" takes this machine's value (`bf16`: where it runs natively)."""
    # No abbreviations: "--unknown_fraction" must not quietly set "--unknown_fractions".
    parser = HfArgumentParser(dataclass_types, allow_abbrev=False)
    settings = dict(defaults or {})
    if argv and argv[0].endswith((".yaml", ".yml")):
        config_file, argv = argv[0], argv[1:]
        with open(config_file, encoding="utf-8") as f:
            from_file = yaml.safe_load(f) or {}
        if not isinstance(from_file, dict):
            raise ValueError(f"{config_file} must hold a mapping of field: value, got {type(from_file).__name__}")
        settings.update(from_file)
    settings.update(overrides or {})
    known = {field.name for cls in dataclass_types for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"Unknown configuration keys {unknown}; the known keys are the fields of "
            f"{', '.join(cls.__name__ for cls in dataclass_types)}"
        )
    parser.set_defaults(**_resolve_auto(settings))
    return parser.parse_args_into_dataclasses(args=_resolve_auto_flags(argv))


def _resolve_auto(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: AUTO_SETTINGS[k]() if k in AUTO_SETTINGS and v == "auto" else v for k, v in settings.items()}


def _resolve_auto_flags(argv: list[str]) -> list[str]:
    resolved = []
    for arg in argv:
        name, is_auto = arg.removeprefix("--").removesuffix("=auto"), arg.endswith("=auto")
        if arg == "auto" and resolved and resolved[-1].removeprefix("--") in AUTO_SETTINGS:
            arg = str(AUTO_SETTINGS[resolved[-1].removeprefix("--")]())
        elif is_auto and name in AUTO_SETTINGS:
            arg = f"--{name}={AUTO_SETTINGS[name]()}"
        resolved.append(arg)
    return resolved


def run_config_sections(*configs: Any) -> dict[str, dict[str, Any]]:
    """The resolved configuration as `run_config.yaml` holds it: one section of plain values per dataclass."""
    sections = {}
    for config in configs:
        values = config.to_dict() if hasattr(config, "to_dict") else dataclasses.asdict(config)
        sections[type(config).__name__] = {k: v for k, v in values.items() if not k.startswith("_")}
    # Through YAML and back, so that what was written compares equal to what is recomputed (tuples become lists).
    return yaml.safe_load(yaml.safe_dump(sections))


def save_run_config(out_dir: str | os.PathLike, *configs: Any) -> Path:
    """Write the resolved configuration (one section per dataclass) to `out_dir/run_config.yaml`."""
    sections = run_config_sections(*configs)
    path = Path(out_dir) / "run_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sections, sort_keys=True, default_flow_style=False), encoding="utf-8")
    return path


__all__ = ["RunArguments", "parse_run_config", "run_config_sections", "save_run_config"]
