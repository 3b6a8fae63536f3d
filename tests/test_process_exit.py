"""How a training run's processes end (`end_run`): the exit of a launched command's processes, on a trainer whose
accelerator only records what it was asked (the real path runs in the `accelerate launch` tests)."""

from types import SimpleNamespace

import pytest

from modeling.training import process_exit


class Exited(Exception):
    pass


@pytest.mark.parametrize(
    "processes, exit_when_launched, exits",
    [(2, True, True), (1, True, False), (2, False, False)],
)
def test_only_a_launched_commands_processes_exit_and_only_after_leaving_the_group(
    monkeypatch, processes, exit_when_launched, exits
):
    calls = []
    accelerator = SimpleNamespace(
        num_processes=processes,
        wait_for_everyone=lambda: calls.append("wait"),
        end_training=lambda: calls.append("end_training"),
    )

    def exit_now(status):
        calls.append(f"exit {status}")
        raise Exited

    monkeypatch.setattr(process_exit.atexit, "_run_exitfuncs", lambda: calls.append("exit handlers"))
    monkeypatch.setattr(process_exit.os, "_exit", exit_now)
    trainer = SimpleNamespace(accelerator=accelerator)
    if exits:
        with pytest.raises(Exited):
            process_exit.end_run(trainer, exit_when_launched)
        assert calls == ["wait", "end_training", "exit handlers", "exit 0"]
    else:
        process_exit.end_run(trainer, exit_when_launched)
        assert calls == ["wait", "end_training"]
