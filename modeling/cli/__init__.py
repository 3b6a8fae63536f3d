"""The command line: one module per command, each with a `main(argv=None)` that `pyproject.toml` installs as a
console script (`lstm-lab-study`, `lstm-lab-pretrain`, ...; `scripts/` holds the same commands as thin fronts).

Every command runs in two phases through `run_command`: first it parses and checks all its settings, then it runs.
A mistake found in the first phase (a config file or flag that names an unknown setting, a value of the wrong type or
outside what is allowed, a missing file) stops the command before anything runs, with one line on stderr and exit
status 2 (argparse's for a usage error). A failure while running is not the user's to fix from a flag: it keeps its
traceback. `--debug` or `LSTM_LAB_DEBUG=1` shows the traceback of a first-phase error too.
"""

import argparse
import os
import sys
import tempfile
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import datasets
import transformers
import yaml

from ..publishing.hub import PushError, push_folder
from ..run_config import OneLineUsageErrors

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LSTM_LAB_DEBUG"
# What a bad setting raises while it is parsed and checked (`parse_run_config`, the dataclasses, the preflights).
# OSError: a file that is missing, a folder or not readable, an output folder that holds a finished run.
SETTINGS_ERRORS = (ValueError, OSError, yaml.YAMLError)
DEBUG_HELP = f"{DEBUG_FLAG} (or {DEBUG_ENV}=1) shows the traceback of a settings error."

Settings = TypeVar("Settings")


class CommandError(Exception):
    """A command that stops while running for a reason the user can act on, with its exit status: `run_command`
    prints its message as one line."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class OneLineParser(OneLineUsageErrors, argparse.ArgumentParser):
    """The parser of a command whose flags are not a dataclass's: one-line usage errors, `--help` that opens with
    the description's commands, no abbreviated flags."""

    def __init__(self, prog: str, description: str):
        super().__init__(
            prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
        )


def run_command(
    prog: str, parse: Callable[[list[str]], Settings], run: Callable[[Settings], object], argv: list[str] | None
) -> None:
    """Run a command: `parse(argv)` builds and checks its settings, then `run(settings)` does the work.

    `argv` defaults to `sys.argv[1:]`; `--debug` is taken out of it before `parse` sees it. The console shows no
    progress bars of `datasets` (saving, mapping, filtering small splits) or of `transformers` (loading and writing
    weights): each command shows its own progress (`training.console`).

    Raises:
        SystemExit: status 2, with `prog: error: <message>` on stderr, when `parse` raises one of `SETTINGS_ERRORS`
            (the error itself under `--debug`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # PEFT calls a transformers property that transformers 5.24 deprecates, once per LoRA run: not the user's to act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        settings = parse(argv)
    except SETTINGS_ERRORS as error:
        _stop(prog, error, 2, debug)
    try:
        run(settings)
    except CommandError as error:
        _stop(prog, error, error.status, debug)


def _stop(prog: str, error: Exception, status: int, debug: bool) -> typing.NoReturn:
    if debug:
        raise error
    message = " ".join(str(error).split())  # one line, whatever the error's own layout
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(status) from None


def publish(write: Callable[[Path], Path], repo_id: str, repo_type: str, private: bool, dry_run: str | None) -> None:
    """Write the folder a push sends (`write(folder)`) to `dry_run` and stop there, or to a temporary folder and
    send it to the Hub repository `repo_id` as one commit (`push_folder`).

    Raises:
        CommandError: status 2 for inputs that do not fit together, found while writing (nothing is written); 1 for
            a push that fails (no token, no network: nothing is sent).
    """
    try:
        if dry_run:
            out = write(Path(dry_run))
            files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
            print(f"dry run: wrote the {len(files)} files that would go to {repo_id} into {out}; nothing was sent")
            return
        with tempfile.TemporaryDirectory() as tmp:
            url = push_folder(write(Path(tmp) / "upload"), repo_id, repo_type=repo_type, private=private)
    except SETTINGS_ERRORS as error:
        raise CommandError(str(error), 2) from error
    except PushError as error:
        raise CommandError(str(error), 1) from error
    print(f"pushed to the {repo_type} repository {repo_id}: {url}")


__all__ = [
    "DEBUG_ENV",
    "DEBUG_FLAG",
    "DEBUG_HELP",
    "SETTINGS_ERRORS",
    "CommandError",
    "OneLineParser",
    "publish",
    "run_command",
]
