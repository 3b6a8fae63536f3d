"""Timing for the benchmark scripts: the clock read around GPU work, and runs taken in turn so that the machine's
drift (other jobs, clocks) hits every side alike. These machines are noisy: a benchmark reports medians and ratios
measured in the same run, never one figure against a fixed number."""

import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch

Outcome = TypeVar("Outcome")


def synchronize(device: str) -> None:
    """Wait for the GPU work queued so far, so that a clock read afterwards includes it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str = "cpu") -> float:
    """Seconds one call of `fn` takes, including the GPU work it queued. A `fn` that times its own work (e.g. the
    Trainer's training loop, without the set-up of its train() call) returns those seconds as a float instead."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result if isinstance(result, float) else time.perf_counter() - start


def in_turn(runs: Mapping[str, Callable[[], Outcome]], repeats: int) -> dict[str, list[Outcome]]:
    """`repeats` results of every run, taken in turn: each repeat calls every run once, and the one that goes first
    moves on by one every repeat (with two runs: who goes first flips), so no run always follows the same other."""
    names = list(runs)
    results: dict[str, list[Outcome]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(runs[name]())
    return results


def interleaved(
    *fns: Callable[[], object], repeats: int, device: str = "cpu", warm_up: bool = True
) -> list[list[float]]:
    """The seconds of `repeats` runs of each of `fns` (see `timed`), taken in turn (see `in_turn`), after one warm-up
    run each (kernel choice, allocator, optimizer state) unless `warm_up` is off; one list per fn, in order."""
    if warm_up:
        for fn in fns:
            fn()
    times = in_turn({str(i): lambda fn=fn: timed(fn, device) for i, fn in enumerate(fns)}, repeats)
    return list(times.values())


__all__ = ["in_turn", "interleaved", "synchronize", "timed"]
