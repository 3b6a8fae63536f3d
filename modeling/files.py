"""Writing files and folders so that a crash never leaves one half-written: JSON through a staging file of its own,
a folder through a staging folder that replaces the old one only once complete. Both get the permissions of any
file or folder made here (the temporary-file functions make theirs private)."""

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _open_to_umask(path: str | os.PathLike, mode: int) -> None:
    # os.umask is the only way to read the umask, and it sets one too: set it back at once.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, mode & ~umask)


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Write `data` as JSON (NaN as null, which every JSON reader accepts) through a staging file, so a crash never
    leaves a truncated file."""
    text = json.dumps(_without_nan(data), indent=2, allow_nan=False) + "\n"
    with staged_file(path) as staging:
        staging.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A staging file beside `path` to write (a name of its own, so two writers never replace each other's
    half-written file): when the `with` block ends, it gets the permissions of any file made here and replaces
    `path`; when the block raises, it is removed and `path` stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        _open_to_umask(staging, 0o666)
        staging.replace(path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _without_nan(value):
    if isinstance(value, dict):
        return {key: _without_nan(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nan(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


@contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[Path]:
    """An empty staging folder beside `out_dir` to write into: when the `with` block ends, it takes the place of
    `out_dir` (see `replace_folder`); when the block raises, it is removed and `out_dir` stays as it was."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    _open_to_umask(staging, 0o777)
    try:
        yield staging
        replace_folder(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_folder(staging: Path, out_dir: Path) -> None:
    """Put the complete folder `staging` in the place of `out_dir` (which may not exist), by renames in the same
    parent folder. A crash in the instant between the two renames leaves the previous folder in `.NAME.old`."""
    if out_dir.exists():
        retired = out_dir.with_name(f".{out_dir.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        out_dir.rename(retired)
        staging.rename(out_dir)
        shutil.rmtree(retired)
    else:
        staging.rename(out_dir)


__all__ = ["replace_folder", "staged_file", "staged_folder", "write_json"]
