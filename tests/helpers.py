"""Helpers shared by the test files (fixtures live in conftest.py)."""

import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psutil
import torch
from huggingface_hub import HfApi
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

import modeling
from modeling import LSTMTokenizer
from modeling.run_config import parse_run_config
from modeling.study import StudyArguments
from modeling.training.architectures import build_config

REPO = Path(__file__).resolve().parents[1]

TINY_SIZES = dict(embedding_dim=16, hidden_size=32, num_layers=2)

CORPUS = [
    "Ada Lovelace was born on 10 December 1815 in London.",
    "Ada Lovelace studied mathematics with Augustus De Morgan.",
    "Alan Turing was born in Maida Vale and studied at King's College.",
    "Grace Hopper worked at Harvard on the Mark I computer.",
    "Question: Where was Ada Lovelace born?\nAnswer: London",
] * 20


def tiny_model(tokenizer: LSTMTokenizer, seed: int = 0, **overrides) -> modeling.LSTMForCausalLM:
    """A randomly initialised tiny model in eval mode, built through the Auto classes."""
    config = AutoConfig.for_model(
        modeling.LSTMConfig.model_type,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **{**TINY_SIZES, **overrides},
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def tiny_gpt2(tokenizer: LSTMTokenizer, max_position_embeddings: int = 128, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised tiny gpt2 (width 32, 2 blocks, 4 heads, no dropout) built from scratch for `tokenizer`
    through the Auto classes, in eval mode."""
    config = build_config(
        "gpt2", len(tokenizer), hidden_size=32, num_layers=2, num_attention_heads=4,
        max_position_embeddings=max_position_embeddings, dropout=0.0, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def random_ids(model: modeling.LSTMForCausalLM, batch: int = 3, length: int = 11, seed: int = 1) -> torch.Tensor:
    """Token ids that avoid the special tokens (ids 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(2, model.config.vocab_size, (batch, length), generator=generator)


def padded_batch(
    model: modeling.LSTMForCausalLM, lengths: list[int], side: str = "left", width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """A padded batch of distinct random sequences of the given lengths: `(ids, attention_mask, sequences)`, with the
    padding on the "left", "right" or "both" sides of each row."""
    width = width or max(lengths)
    sequences = [random_ids(model, 1, n, seed=10 + row)[0] for row, n in enumerate(lengths)]
    ids = torch.full((len(lengths), width), model.config.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, seq in enumerate(sequences):
        pad = width - len(seq)
        start = {"left": pad, "right": 0, "both": pad // 2}[side]
        ids[row, start : start + len(seq)] = seq
        mask[row, start : start + len(seq)] = 1
    return ids, mask, sequences


def checkout_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess that must import `modeling` from this checkout, whatever else is installed."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def free_port() -> int:
    """A TCP port no one listens on now (the system's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accelerate_launch(*script_and_args: str, tmp_path: Path, processes: int = 2) -> subprocess.CompletedProcess:
    """Runs a script under `accelerate launch` with the project's CPU launch config (gloo) on `processes` processes
    from this checkout. GPUs are hidden too, so the run takes the CPU on any machine."""
    env = checkout_env(HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    config = REPO / "configs" / "accelerate" / "cpu_2_processes.yaml"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    # A port of its own: two launches on one port (another test run beside this one) wait for each other for ever.
    launch += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
    return run_in_own_group([*launch, *script_and_args], env=env, cwd=tmp_path, timeout=300)


LAUNCH_MARKER = "LSTM_LAB_TEST_LAUNCH"  # set in every process a test launches, to find them all again


class LaunchTimeout(subprocess.TimeoutExpired):
    """A launched command that ran past its time, shown with the end of what it printed (a worker of
    torch.distributed can hang at exit once its work is written, an open upstream issue: the output tells)."""

    def __str__(self) -> str:
        ends = {name: (text or "")[-2000:] for name, text in (("stdout", self.stdout), ("stderr", self.stderr))}
        return super().__str__() + "".join(f"\n{name} ends:\n{text}" for name, text in ends.items())


def run_in_own_group(command: list[str], timeout: float, **popen_kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(command, capture_output=True, text=True)` that can neither stall the suite nor leave a process
    behind: the output goes to files, not pipes (a worker that outlives its launcher would hold a pipe open, and
    reading it would wait for ever), and once the command ends or runs past `timeout` every process that inherited
    this call's marker is killed, workers that `torch.distributed` started in sessions of their own included.

    Raises:
        subprocess.TimeoutExpired: past `timeout`, with what the command printed.
    """
    marker = uuid.uuid4().hex
    env = {**popen_kwargs.pop("env", os.environ), LAUNCH_MARKER: marker}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env, **popen_kwargs)
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_marked(marker)
            process.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        raise LaunchTimeout(command, timeout, stdout, stderr)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_marked(marker: str) -> None:
    """Kill every process whose environment holds `LAUNCH_MARKER=marker`."""
    for process in psutil.process_iter():
        try:
            if process.environ().get(LAUNCH_MARKER) == marker:
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue


def tiny_args(out: Path, *flags: str) -> StudyArguments:
    """The settings of the tiny study (configs/study/tiny.yaml) writing into `out`, with `flags` on top."""
    argv = [str(REPO / "configs" / "study" / "tiny.yaml"), "--output_dir", str(out)]
    argv += ["--pretrain_config", str(REPO / "configs" / "tiny.yaml")]
    argv += ["--finetune_config", str(REPO / "configs" / "study" / "finetune_tiny.yaml"), *flags]
    return parse_run_config((StudyArguments,), argv)[0]


def load_script(path: Path):
    """The script at `path` imported as a module (its `main` then runs in this process, under monkeypatches)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path, with the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def recording_hub(monkeypatch) -> dict:
    """The Hub is out of reach: `HfApi`'s methods a push calls are replaced at the last step (a token is set), and
    what they are given is recorded in the dict returned: `created` (repo id, options), `uploads` (repo id, the
    folder's `snapshot`, options), one per upload."""
    sent = {}
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(HfApi, "whoami", lambda self, **kw: {"name": "lab-user"})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: sent.update(created=(repo_id, kw)))

    def upload_folder(self, *, repo_id, folder_path, **kw):
        sent.setdefault("uploads", []).append((repo_id, snapshot(Path(folder_path)), kw))
        return type("CommitInfo", (), {"commit_url": "https://example.invalid/commit/1"})()

    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return sent
