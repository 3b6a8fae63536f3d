"""The suite's launcher of subprocesses (`helpers.run_in_own_group`): a worker that leaves its launcher's session
(as torch.distributed's workers do) can neither stall a test nor outlive it."""

import subprocess
import sys
import time
import uuid

import psutil
import pytest
from helpers import run_in_own_group


def running(token: str) -> list[psutil.Process]:
    """The processes whose command line holds `token`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(token in part for part in process.info["cmdline"] or ()):
            found.append(process)
    return found


def test_a_worker_in_a_session_of_its_own_neither_stalls_the_call_nor_outlives_it():
    token = uuid.uuid4().hex  # names the worker, so the test can look for it afterwards
    worker = f"import time; time.sleep(600)  # {token}"
    launcher = (
        "import subprocess, sys; "
        f"subprocess.Popen([sys.executable, '-c', {worker!r}], start_new_session=True); print('launched')"
    )
    start = time.monotonic()
    result = run_in_own_group([sys.executable, "-c", launcher], timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "launched"
    assert time.monotonic() - start < 60  # the worker held the launcher's stdout: reading a pipe would have waited
    psutil.wait_procs(running(token), timeout=10)
    assert running(token) == []


def test_a_command_past_its_timeout_is_killed_with_what_it_printed():
    token = uuid.uuid4().hex
    command = [sys.executable, "-c", f"print('started', flush=True); import time; time.sleep(600)  # {token}"]
    with pytest.raises(subprocess.TimeoutExpired) as stopped:
        run_in_own_group(command, timeout=3)
    assert stopped.value.stdout.strip() == "started" and "stdout ends:\nstarted" in str(stopped.value)
    psutil.wait_procs(running(token), timeout=10)
    assert running(token) == []
