"""The study's records file: written whole or not at all, readable by `datasets`, and trusted only when it is the file
that was written."""

import os
import stat

import pytest
from datasets import load_dataset

from modeling.files import staged_file
from modeling.study.records import RECORD_FEATURES, read_records, write_records


def rows(count: int) -> list[dict]:
    """`count` records, each different."""
    base = {name: None for name in RECORD_FEATURES}
    return [
        base
        | {"condition": "full_u0_n6_none", "training_seed": i % 2, "epoch": i, "person_id": i, "answer": f"city {i}"}
        for i in range(count)
    ]


def test_records_round_trip_through_parquet_and_datasets(tmp_path):
    path = tmp_path / "run.parquet"
    digest = write_records(rows(3), path)
    frame = read_records(path, digest)
    assert list(frame["answer"]) == ["city 0", "city 1", "city 2"] and list(frame["training_seed"]) == [0, 1, 0]
    loaded = load_dataset("parquet", data_files=str(path), split="train")
    assert loaded.num_rows == 3 and set(loaded.column_names) == set(RECORD_FEATURES)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not the staging file's private mode


def test_a_changed_or_cut_records_file_is_not_trusted(tmp_path):
    path = tmp_path / "run.parquet"
    digest = write_records(rows(4), path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])
    assert read_records(path, digest) is None  # cut short
    path.write_bytes(whole)
    write_records(rows(5), tmp_path / "other.parquet")
    assert read_records(tmp_path / "other.parquet", digest) is None  # whole, but not the file that was written
    assert read_records(tmp_path / "missing.parquet") is None
    assert read_records(path, digest) is not None


def test_a_write_that_fails_leaves_the_old_file_and_no_staging_file(tmp_path):
    path = tmp_path / "run.parquet"
    digest = write_records(rows(2), path)
    with pytest.raises(RuntimeError, match="disk full"), staged_file(path) as staging:
        staging.write_bytes(b"half a file")
        raise RuntimeError("disk full")
    assert read_records(path, digest) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.parquet"]
