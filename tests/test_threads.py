"""CPU threads: chosen from the cores that are free, overridable, and measured by scripts/bench_threads.py."""

import json
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO, checkout_env

from modeling.threads import choose_num_threads, free_cores, set_num_threads, usable_cores


@pytest.mark.parametrize(
    "free, cores, processes, expected",
    [
        (1.97, 2, 1, 2),  # an idle 2-core machine: both cores
        (1.02, 2, 1, 1),  # one core busy elsewhere: a second thread would stall on it
        (0.3, 2, 1, 1),  # at least one thread
        (1.97, 2, 2, 1),  # two local processes share the free cores
        (7.6, 8, 2, 4),
        (11.0, 4, 1, 4),  # free cores outside this process's affinity do not count
        (None, 4, 1, 4),  # no measurement: every usable core
    ],
)
def test_choose_num_threads(free, cores, processes, expected):
    assert choose_num_threads(free, cores, processes) == expected


@pytest.fixture
def busy_loop():
    loop = subprocess.Popen(
        [sys.executable, "-c", "print('spinning', flush=True)\nwhile True: pass"], stdout=subprocess.PIPE
    )
    assert loop.stdout.readline() == b"spinning\n"
    time.sleep(0.2)
    yield loop
    loop.kill()
    loop.wait()


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_busy_core_is_not_counted_as_free(busy_loop, restore_threads, monkeypatch):
    assert free_cores() <= usable_cores() - 0.7
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    chosen = set_num_threads()
    assert chosen == torch.get_num_threads() <= max(1, usable_cores() - 1)


def test_an_explicit_setting_wins(restore_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert set_num_threads() == 3 == torch.get_num_threads()
    assert set_num_threads(2) == 2 == torch.get_num_threads()
    with pytest.raises(ValueError, match="num_threads must be at least 1, got 0"):
        set_num_threads(0)


def test_bench_threads_reports_every_setting_in_both_conditions(tmp_path):
    out = tmp_path / "threads.json"
    command = [sys.executable, str(REPO / "scripts" / "bench_threads.py"), "--quick", "--steps", "2", "--out", str(out)]
    result = subprocess.run(command, env=checkout_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    settings = {"auto", "1", str(usable_cores())}
    for condition in ("free", "busy"):
        figures = report[condition]["settings"]
        assert set(figures) == settings and all(figures[s]["train"] > 0 < figures[s]["generate"] for s in settings)
        fastest = min(row["train"] for row in figures.values())
        assert report[condition]["auto_ratio"]["train"] == pytest.approx(figures["auto"]["train"] / fastest)
    assert report["busy"]["settings"]["1"]["threads"] == 1
    assert report["busy"]["settings"]["auto"]["threads"] <= max(1, usable_cores() - 1)
    assert "auto / fastest, train" in result.stdout
