"""Run configuration: dataclass defaults, overridden by an embedded default, a YAML file in configs/, then flags.

Every run writes the configuration it resolved to `run_config.yaml` in its output folder, so any result can be
traced back to the exact settings that produced it.
"""

import argparse
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .training.precision import native_bf16

# The checkout this package runs from (an editable install): where `configs/` lies.
CHECKOUT = Path(__file__).resolve().parents[1]
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

    def __post_init__(self):
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"num_threads is {self.num_threads}; allowed: a positive number of threads, or unset")


class OneLineUsageErrors:
    """An `argparse.ArgumentParser` mixin: a usage error (an unknown flag, a value of the wrong type) is one line,
    `prog: error: ...`, not the usage of every field; exit status 2 as argparse's."""

    def error(self, message: str) -> typing.NoReturn:
        hint = " (--help lists every setting)" if self.description else ""  # a command's, not a config file's
        self.exit(2, f"{self.prog}: error: {message}{hint}\n")


class _Parser(OneLineUsageErrors, HfArgumentParser):
    pass


def parse_run_config(
    dataclass_types: tuple[type, ...],
    argv: list[str],
    defaults: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    description: str | None = None,
    prog: str | None = None,
) -> tuple[Any, ...]:
    """Build the dataclasses from `defaults`, then an optional YAML file given as the first argument, then
    `overrides` (typed values, as code sets them), then `--field value` flags; each dataclass then checks the whole
    (e.g. `TrainingArguments.__post_init__`). Unknown keys, in the file, the overrides or as flags, are an error.
    A setting of `AUTO_SETTINGS` given as "auto" takes this machine's value (`bf16`: where it runs natively).
    `description` opens `--help` (a command's docstring: the commands that run it); `prog` names the command in
    `--help` and in a usage error (default: the script's file name).

    Raises:
        ValueError: naming the setting, its value and what is allowed, for an unknown key, a value of the wrong type
            (`check_types`) or one a dataclass refuses.
        SystemExit: status 2, for a flag argparse cannot parse (one line on stderr).
    """
    # No abbreviations: "--unknown_fraction" must not quietly set "--unknown_fractions".
    parser = _Parser(
        dataclass_types,
        prog=prog,
        allow_abbrev=False,
        description=description,
        # One line, so that --help opens with the description's commands rather than with every field.
        usage="%(prog)s [CONFIG.yaml] [--setting value ...]" if description else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    settings, from_file, config_file = dict(defaults or {}), {}, None
    if argv and argv[0].endswith((".yaml", ".yml")):
        config_file, argv = find_config(argv[0]), argv[1:]
        with open(config_file, encoding="utf-8") as f:
            from_file = yaml.safe_load(f) or {}
        if not isinstance(from_file, dict):
            raise ValueError(f"{config_file} must hold a mapping of field: value, got {type(from_file).__name__}")
        not_names = [key for key in from_file if not isinstance(key, str)]
        if not_names:
            raise ValueError(f"{config_file} has keys {not_names} that are no setting's name; allowed: field names")
        settings.update(from_file)
    settings.update(overrides or {})
    known = {field.name for cls in dataclass_types for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"Unknown configuration keys {unknown}{_did_you_mean(unknown[0], known)}; the known keys are the fields "
            f"of {', '.join(cls.__name__ for cls in dataclass_types)}"
        )
    for flag in (arg.split("=")[0] for arg in argv if arg.startswith("--")):
        name = flag[2:].replace("-", "_")
        if name not in {*known, "help"} and name.removeprefix("no_") not in known:  # `--no_x`: a true flag set false
            raise ValueError(f"{flag} is no setting{_did_you_mean(name, known)} (--help lists every setting)")
    settings = _resolve_auto(settings)
    for cls in dataclass_types:  # before the dataclasses' own checks, which assume the types
        fields = {f.name for f in dataclasses.fields(cls)}
        check_types(cls, {k: v for k, v in settings.items() if k in fields}, dict.fromkeys(from_file, config_file))
    parser.set_defaults(**settings)
    return parser.parse_args_into_dataclasses(args=_resolve_auto_flags(argv))


def _did_you_mean(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def find_config(path: str) -> str:
    """`path` when it exists from the working folder; else, for a relative path, the same path in the checkout the
    package runs from, if there (so that `lstm-lab-study configs/study/tiny.yaml` and the default study's own configs
    work from any folder); else `path`, whose error comes where it is opened."""
    if Path(path).exists() or Path(path).is_absolute() or not (CHECKOUT / path).exists():
        return path
    return str(CHECKOUT / path)


def _matches(value: Any, annotation: Any) -> bool:
    """Whether `value` (from a YAML file or code) is of the field type `annotation`: int for a float is fine, a bool
    is not a number, and a list's items are checked; a type this does not know passes."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation in (int, float):
        numbers = (int, float) if annotation is float else (int,)
        return isinstance(value, numbers) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True


def check_types(cls: type, settings: dict[str, Any], sources: dict[str, str] | None = None) -> None:
    """Refuse a setting of dataclass `cls` whose value is not of its field's type (argparse converts flags, but a
    value from a file or code reaches the dataclass as it is: `unknown_fractions: 0.5` would be a number, not a list).
    `sources` names the file a setting came from, for the message.

    Raises:
        ValueError: naming the setting, its value and the type allowed.
    """
    hints = typing.get_type_hints(cls)
    for name, value in settings.items():
        if not _matches(value, hints[name]):
            hint = hints[name]  # `float`, or `list[float]` and `int | None` as written
            allowed = str(hint).replace("typing.", "") if typing.get_origin(hint) else getattr(hint, "__name__", hint)
            where = f"{sources[name]}: " if name in sources else ""
            raise ValueError(f"{where}{cls.__name__}.{name} is {value!r}; allowed: a value of type {allowed}")


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


__all__ = [
    "CHECKOUT",
    "RunArguments",
    "check_types",
    "find_config",
    "parse_run_config",
    "run_config_sections",
    "save_run_config",
]
