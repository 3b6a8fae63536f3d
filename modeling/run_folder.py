"""A run's output folder: a finished run in it is never overwritten by accident, nor ever half-overwritten.

A run is finished once its `metrics.json` exists, and that file is written last. A new run stops before training when
its folder holds a finished run, unless told to overwrite it; then it deletes `metrics.json` first and the rest of the
old run after it, so a crash midway leaves a folder that reads as unfinished, never a mix of two runs.
"""

import os
import shutil
from pathlib import Path
from typing import Any

from .files import write_json
from .run_config import save_run_config

FINISHED_MARKER = "metrics.json"


def check_output_dir(
    out_dir: str | os.PathLike, overwrite: bool, inputs: tuple[str | os.PathLike | None, ...] = ()
) -> Path:
    """Whether a run may write into `out_dir` (nothing is changed): a folder, or nothing yet, that holds no finished
    run unless `overwrite`, and whose deletion would take none of the run's `inputs`.

    Raises:
        FileExistsError: if `out_dir` is a file, or holds a finished run and `overwrite` is False.
        ValueError: if `overwrite` would delete one of the run's `inputs` (a model, world or data inside `out_dir`).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"output_dir {out_dir} is a file; allowed: a folder, or a path where there is nothing")
    if not (out_dir / FINISHED_MARKER).exists():
        return out_dir
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} holds a finished run ({FINISHED_MARKER} is there): choose another output_dir, or pass "
            "--overwrite_output_dir true to replace it"
        )
    for path in filter(None, inputs):
        if Path(path).resolve().is_relative_to(out_dir.resolve()):
            raise ValueError(f"--overwrite_output_dir would delete {out_dir}, which holds this run's input {path}")
    return out_dir


def prepare_output_dir(
    out_dir: str | os.PathLike,
    overwrite: bool,
    is_main_process: bool = True,
    inputs: tuple[str | os.PathLike | None, ...] = (),
) -> Path:
    """Check `out_dir` before a run writes into it (`check_output_dir`; every process checks, only the main one
    deletes). With `overwrite`, a finished run in it is deleted: `metrics.json` first, then the whole folder.

    Raises:
        FileExistsError, ValueError: as `check_output_dir`.
    """
    out_dir = check_output_dir(out_dir, overwrite, inputs)
    marker = out_dir / FINISHED_MARKER
    if marker.exists() and is_main_process:
        marker.unlink()
        shutil.rmtree(out_dir)
    return out_dir


def write_run_record(
    out_dir: str | os.PathLike, metrics: dict[str, Any], log_history: list[dict[str, Any]], *configs: Any
) -> None:
    """Write `run_config.yaml` (the resolved `configs`), `log_history.json` (the Trainer's) and, last, `metrics.json`,
    which marks the run finished."""
    out_dir = Path(out_dir)
    save_run_config(out_dir, *configs)
    write_json({"log_history": log_history}, out_dir / "log_history.json")
    write_json(metrics, out_dir / FINISHED_MARKER)


__all__ = ["FINISHED_MARKER", "check_output_dir", "prepare_output_dir", "write_run_record"]
