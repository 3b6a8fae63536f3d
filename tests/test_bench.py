"""Smoke test of scripts/bench.py: its quick mode runs and prints the three ratios (their values are not checked:
a shared CPU is far too noisy for speed targets in a test)."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"
ROWS = ["train step", "generate greedy", "cache speed-up"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # One thread: the figures do not matter here, and on a busy machine OpenMP threads waiting for each other can make
    # single-token LSTM steps many times slower.
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,  # about 10 s; the limit only catches a hang
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ROWS)
def test_prints_a_finite_positive_ratio(quick_run: tuple[str, dict], name: str) -> None:
    stdout, _ = quick_run
    # name, model tok/s, baseline tok/s, ratio, ">= target", PASS/FAIL
    row = re.search(rf"^{re.escape(name)}\s+(\S+)\s+(\S+)\s+(\S+)\s+>= (\S+)\s+(PASS|FAIL)$", stdout, re.MULTILINE)
    assert row, stdout
    for figure in row.groups()[:4]:
        assert math.isfinite(float(figure)) and float(figure) > 0, row.group(0)


def test_writes_the_figures_as_json(quick_run: tuple[str, dict]) -> None:
    _, report = quick_run
    assert [r["name"] for r in report["results"]] == ROWS
    for r in report["results"]:
        assert math.isfinite(r["ratio"]) and r["ratio"] > 0
        assert r["passed"] == (r["ratio"] >= r["target"])
