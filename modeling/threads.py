"""How many CPU threads PyTorch uses: as many as there are cores free when the run starts, shared by the processes
of this machine.

PyTorch starts one OpenMP thread per core, and OpenMP threads spin-wait for each other at every parallel region. On a
small machine where another process keeps a core busy, the thread that shares a core with it stalls all the others:
40 training steps of the default model size on 2 cores took 5.2 s alone but 18.0 s beside one busy Python loop with 2
threads, and 9.8 s with 1 thread (`scripts/bench_threads.py`). Counting the cores that are idle, instead of all cores,
keeps the fast setting on a free machine and the steady one on a busy machine.
"""

import os
import time

import torch

ENV_VARIABLE = "OMP_NUM_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which container limits and `taskset` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores since boot, from /proc/stat; None where there is no /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(value) for value in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal; guest time is counted in user already.
    idle = fields[3] + fields[4]
    return idle, sum(fields[:8])


def free_cores(interval: float = 0.25) -> float | None:
    """Cores left idle by every process over the next `interval` seconds, between 0 and `os.cpu_count()`; None
    where the kernel does not say (no /proc/stat)."""
    before = _cpu_times()
    time.sleep(interval)
    after = _cpu_times()
    if before is None or after is None or after[1] == before[1]:
        return None
    idle_share = (after[0] - before[0]) / (after[1] - before[1])
    return idle_share * (os.cpu_count() or 1)


def choose_num_threads(free: float | None, cores: int, local_processes: int = 1) -> int:
    """Threads for one of `local_processes` processes: the free cores (rounded, at most `cores`) shared equally, at
    least 1. Without a measurement (`free` is None) every usable core counts as free."""
    available = cores if free is None else min(cores, round(free))
    return max(1, available // max(1, local_processes))


def set_num_threads(requested: int | None = None, local_processes: int = 1) -> int:
    """Set `torch.set_num_threads` and return the number: `requested` when given, else `OMP_NUM_THREADS` when set
    (`accelerate launch` sets it for its processes), else `choose_num_threads` from the cores free right now.

    Raises:
        ValueError: if `requested` is below 1.
    """
    if requested is not None and requested < 1:
        raise ValueError(f"num_threads must be at least 1, got {requested}")
    if requested is None and os.environ.get(ENV_VARIABLE, "").strip().isdigit():
        requested = max(1, int(os.environ[ENV_VARIABLE]))
    if requested is None:
        requested = choose_num_threads(free_cores(), usable_cores(), local_processes)
    torch.set_num_threads(requested)
    return requested


__all__ = ["choose_num_threads", "free_cores", "set_num_threads", "usable_cores"]
