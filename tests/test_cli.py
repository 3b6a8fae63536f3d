"""The command line: every mistake in a study's config or flags stops it before anything runs, with one line that
names the setting, the value and what is allowed, and exit status 2; `--debug` shows the traceback; each command's
`--help` opens with the lines that run it; the installed console scripts run."""

import os
import subprocess
import sys
import time
from importlib import import_module
from pathlib import Path

import pytest
import tomllib
from helpers import REPO, checkout_env

from modeling.cli import DEBUG_ENV
from modeling.cli import study as study_cli
from modeling.world import WorldConfig, generate_world, save_world

TINY = [str(REPO / "configs" / "study" / "tiny.yaml")]
TINY_SWEEP = [str(REPO / "configs" / "study" / "sweep.yaml"), "--pretrain_config", str(REPO / "configs" / "tiny.yaml")]
COMMANDS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


# (flags after the tiny study's config, words the one line must hold: the setting, the value, what is allowed)
MISTAKES = {
    "unknown flag": (
        ["--unknown_fraction", "0.5"],
        ["--unknown_fraction is no setting", "did you mean unknown_fractions?"],
    ),
    "flag of the wrong type": (["--probe_samples", "many"], ["--probe_samples", "invalid int value", "'many'"]),
    "no probe samples": (["--probe_samples", "0"], ["probe_samples is 0", "allowed: a positive number"]),
    "zero temperature": (["--probe_temperature", "0"], ["probe_temperature is 0.0", "a positive temperature"]),
    "share above 1": (["--unknown_fractions", "0.5", "1.5"], ["unknown_fractions is [0.5, 1.5]", "in [0, 1]"]),
    "no shares": (["--unknown_fractions"], ["--unknown_fractions", "expected at least one argument"]),
    "unknown method": (["--methods", "full", "qlora"], ["methods is ['full', 'qlora']", "'full', 'lora'"]),
    "unknown mitigation": (["--mitigations", "dropout"], ["mitigations is ['dropout']", "early_stopping"]),
    "empty fine-tune set": (["--finetune_size", "0"], ["finetune_size is 0", "a positive number"]),
    "thin size 0": (["--thin_sizes", "0"], ["thin_sizes is [0]", "positive numbers"]),
    "thin size above the set": (["--thin_sizes", "12"], ["thin_sizes [12]", "finetune_size=6"]),
    "negative LoRA rate": (["--lora_learning_rate", "-0.1"], ["lora_learning_rate is -0.1", "a positive rate"]),
    "negative training seed": (["--training_seeds", "-1"], ["training_seeds is [-1]", "seeds >= 0"]),
    "repeated seeds": (["--training_seeds", "1", "1"], ["training_seeds is [1, 1]", "distinct"]),
    "epochs out of order": (["--eval_epochs", "80", "40"], ["eval_epochs is [80, 40]", "increasing epochs"]),
    "epochs not ending with training": (["--eval_epochs", "10", "20"], ["eval_epochs", "80"]),
    "no threads": (["--num_threads", "0"], ["num_threads is 0", "a positive number of threads"]),
    "share without its reference": (["--filtered_fractions", "1.0"], ["filtered_fractions", "[1.0]", "add them"]),
    "missing config": (["--pretrain_config", "nowhere.yaml"], ["pretrain_config is 'nowhere.yaml'", "existing"]),
    "missing fine-tuning config": (["--finetune_config", "no.yaml"], ["finetune_config is 'no.yaml'", "existing"]),
    "thin share above 1": (["--size_fraction", "1.5"], ["size_fraction is 1.5", "in [0, 1]"]),
    "negative mitigation share": (["--mitigation_fraction", "-0.1"], ["mitigation_fraction is -0.1", "in [0, 1]"]),
    "filtered share above 1": (["--filtered_fractions", "2"], ["filtered_fractions is [2.0]", "in [0, 1]"]),
    "no KL weight": (["--kl_coef", "0"], ["kl_coef is 0.0", "a positive weight"]),
    "replay everything": (["--replay_fraction", "1"], ["replay_fraction is 1.0", "a share in (0, 1)"]),
    "LoRA rate 0": (["--lora_learning_rate", "0"], ["lora_learning_rate is 0.0", "a positive rate"]),
    "epoch 0 evaluated": (["--eval_epochs", "0", "80"], ["eval_epochs is [0, 80]", "from 1 on"]),
    "negative probe seed": (["--seed", "-1"], ["seed is -1", "a seed >= 0"]),
    "repeated study seeds": (["--seeds", "1", "1"], ["seeds is [1, 1]", "distinct"]),
    "world too small": (["--finetune_size", "400"], ["full_u0_n400_none", "400 questions", "more people"]),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_stops_the_study_with_one_line_and_status_2(mistake, tmp_path, capsys):
    flags, words = MISTAKES[mistake]
    out = tmp_path / "study"
    with pytest.raises(SystemExit) as stopped:
        study_cli.main([*TINY, "--output_dir", str(out), *flags])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm-lab-study: error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize(
    "config, words",
    [
        ("unknown_fractions: 0.5\n", ["StudyArguments.unknown_fractions is 0.5", "list[float]"]),
        ("probe_samples: 2.5\n", ["StudyArguments.probe_samples is 2.5", "int"]),
        ("methods: full\n", ["StudyArguments.methods is 'full'", "list[str]"]),
        ("epochs: 3\n", ["Unknown configuration keys ['epochs']"]),
        ("methods: [full\n", ["while parsing a flow sequence"]),
        ("[1, 2]\n", ["must hold a mapping of field: value"]),
        ("1: 2\nbogus: 3\n", ["keys [1] that are no setting's name"]),
        ("training_seeds: []\n", ["training_seeds is []", "one or more"]),
        ("methods: []\n", ["methods is []", "one or more of"]),
        ("finetune_size: -6\n", ["finetune_size is -6", "a positive number"]),
        ("thin_sizes: [2.5]\n", ["thin_sizes is [2.5]", "list[int]"]),
    ],
)
def test_a_mistake_in_a_study_file_stops_it_the_same_way(config, words, tmp_path, capsys):
    # The output folder comes first unless the file is not a mapping at all.
    head = "" if config.startswith("[") else f"output_dir: {tmp_path / 'study'}\n"
    path = write(tmp_path / "study.yaml", head + config)
    with pytest.raises(SystemExit) as stopped:
        study_cli.main([path])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    "config, flag, words",
    [
        ("lr_scheduler_type: sometimes\n", "--finetune_config", ["sometimes is not a valid SchedulerType", "'linear'"]),
        ("learning_rate: [0.1]\n", "--finetune_config", ["named.yaml: SFTConfig.learning_rate is [0.1]", "float"]),
        ("learning_rate: -1.0\n", "--finetune_config", ["named.yaml: learning_rate is -1.0", "a positive rate"]),
        ("per_device_train_batch_size: 0\n", "--finetune_config", ["per_device_train_batch_size is 0", "positive"]),
        ("learning_rate: fast\n", "--finetune_config", ["named.yaml: SFTConfig.learning_rate is 'fast'", "float"]),
        ("learning_rate: [0.1]\n", "--pretrain_config", ["TrainingArguments.learning_rate is [0.1]", "float"]),
        ("num_people: 3\n", "--pretrain_config", ["num_people"]),
        ("train_files: [notes.txt]\n", "--pretrain_config", ["sets train_files", "the study needs a world"]),
    ],
)
def test_a_mistake_in_a_config_the_study_names_stops_it_before_pre_training(config, flag, words, tmp_path, capsys):
    base = REPO / "configs" / ("study/finetune_tiny.yaml" if flag == "--finetune_config" else "tiny.yaml")
    path = write(tmp_path / "named.yaml", base.read_text() + config)
    with pytest.raises(SystemExit) as stopped:
        study_cli.main([*TINY, "--output_dir", str(tmp_path / "study"), flag, path])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines
    assert not (tmp_path / "study").exists()


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    argv = [*TINY, "--output_dir", str(tmp_path / "study"), "--probe_samples", "0"]
    with pytest.raises(ValueError, match="probe_samples is 0"):
        study_cli.main([*argv, "--debug"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="probe_samples is 0"):
        study_cli.main(argv)


def test_the_error_comes_before_anything_runs_from_a_fresh_process(tmp_path):
    """The default study as a user types it, with a fine-tune set its world cannot fill (a mistake only the checks
    of the configs and the world catch, not the dataclass): status 2, one line and nothing written, within seconds
    of the time it takes a fresh process to import the command (the default pre-training alone takes minutes)."""
    start = time.perf_counter()
    imported = subprocess.run(
        [sys.executable, "-c", "import modeling.cli.study"], env=checkout_env(), cwd=tmp_path, capture_output=True
    )
    import_seconds = time.perf_counter() - start
    assert imported.returncode == 0, imported.stderr
    command = [sys.executable, str(REPO / "scripts" / "study.py"), "--output_dir", str(tmp_path / "study")]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, "--finetune_size", "100000"], capture_output=True, text=True, env=checkout_env(), cwd=tmp_path
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("lstm-lab-study: error: StudyArguments plans full_u0_n100000_none, but ")
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "study").exists()
    # The checks themselves take a fraction of a second; the margin is for a loaded machine.
    assert seconds < import_seconds + 15, (
        f"the error came {seconds:.1f} s after the start, imports take {import_seconds:.1f}"
    )


def test_an_output_folder_the_study_cannot_use_is_refused_and_kept(tmp_path, capsys):
    a_file = write(tmp_path / "notes.txt", "mine")
    with pytest.raises(SystemExit) as stopped:
        study_cli.main([*TINY, "--output_dir", a_file])
    assert stopped.value.code == 2 and "output_dir" in capsys.readouterr().err
    # A folder that holds no study, with --overwrite_output_dir: refused, not deleted.
    with pytest.raises(SystemExit) as stopped:
        study_cli.main([*TINY, "--output_dir", str(tmp_path), "--overwrite_output_dir", "true"])
    assert stopped.value.code == 2
    assert "would delete" in capsys.readouterr().err and (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_opens_with_the_commands_that_run_it(command, capsys):
    module = import_module(COMMANDS[command].split(":")[0])
    with pytest.raises(SystemExit) as stopped:
        module.main(["--help"])
    assert stopped.value.code == 0
    text = capsys.readouterr().out
    opening = text.split("options:")[0]
    assert len(opening.splitlines()[0]) < 100  # a one-line usage, not every field
    commands = [line.strip() for line in opening.splitlines()[1:] if line.strip().split(" ")[0] == command]
    assert commands, opening
    assert "--debug" in opening


def test_the_installed_commands_run(tmp_path):
    """`pip install -e .` (scripts/setup.sh) puts every command beside the interpreter; one runs end to end, from a
    folder outside the checkout."""
    bin_dir = os.path.dirname(sys.executable)
    for command in COMMANDS:
        assert os.access(os.path.join(bin_dir, command), os.X_OK), command
    result = subprocess.run(
        [os.path.join(bin_dir, "lstm-lab-make-world"), "--out", str(tmp_path / "world"), "--num_people", "20"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "wrote a world of 20 people" in result.stdout
    assert (tmp_path / "world" / "knowledge_base.json").is_file()
    bad = subprocess.run(
        [os.path.join(bin_dir, "lstm-lab-make-world"), "--out", str(tmp_path / "bad"), "--num_people", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("lstm-lab-make-world: error: "), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "command, argv, words",
    [
        ("lstm-lab-pretrain", ["--num_people", "0"], ["WorldConfig.num_people", "got 0"]),
        ("lstm-lab-pretrain", ["--num_threads", "-2"], ["num_threads is -2", "a positive number"]),
        ("lstm-lab-finetune", ["--model_dir", "nowhere"], ["FinetuneArguments.model_dir is 'nowhere'", "existing"]),
        ("lstm-lab-sweep", ["--batch_sizes", "0"], ["batch_sizes must be positive"]),
        ("lstm-lab-sweep", ["--finetune_size", "400"], ["full_u0.5_n400_none", "more people"]),
        ("lstm-lab-make-world", ["--out", "world", "--num_people", "1"], ["num_people=1 has no rows", "raise"]),
        ("lstm-lab-make-world", ["--out", "finished"], ["finished already exists", "a new or empty folder"]),
        ("lstm-lab-push-world", ["--world", "nowhere", "--repo-id", "a/b"], ["nowhere is not a world"]),
        (
            "lstm-lab-pretrain",
            ["--output_dir", "finished"],
            ["finished holds a finished run", "--overwrite_output_dir"],
        ),
    ],
)
def test_every_command_stops_a_mistake_with_one_line_and_status_2(command, argv, words, tmp_path, capsys, monkeypatch):
    module = import_module(COMMANDS[command].split(":")[0])
    monkeypatch.chdir(tmp_path)  # anything written with a relative path would land here
    if "finished" in argv:  # a finished run, which a new one must not overwrite unasked
        write(Path(mkdir(tmp_path / "finished")) / "metrics.json", "{}")
    with pytest.raises(SystemExit) as stopped:
        module.main([*(TINY_SWEEP if command == "lstm-lab-sweep" else []), *argv])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error: "), lines
    assert all(word in lines[0] for word in words), lines[0]
    assert [p.name for p in tmp_path.rglob("*")] == (["finished", "metrics.json"] if "finished" in argv else [])


# The study and sweep configs: those that name a fine-tuning config (the others are the configs they name).
RUN_CONFIGS = sorted(
    p.name for p in (REPO / "configs" / "study").glob("*.yaml") if "\nfinetune_config:" in p.read_text()
)


@pytest.mark.parametrize("config", ["(the default study)", *RUN_CONFIGS])
def test_every_committed_config_passes_its_commands_checks(config, tmp_path, monkeypatch):
    """The checks refuse mistakes, not the configs we ship: each study (or sweep) config parses and passes every
    check of its command, from a folder outside the checkout, and writes nothing."""
    monkeypatch.chdir(tmp_path)
    path = f"configs/study/{config}"  # relative: found in the checkout the package runs from
    if config.startswith("sweep"):
        assert import_module("modeling.cli.sweep").parse([path]).regimes()
    else:
        assert study_cli.parse([path] if config in RUN_CONFIGS else []).training_seeds
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("world") / "world"
    save_world(generate_world(WorldConfig(num_people=20, seed=3)), folder)
    return folder


@pytest.mark.parametrize(
    "command, flags, words",
    [
        ("finetune", ["--finetune_size", "0"], ["size must be a positive integer, got 0"]),
        ("finetune", ["--learning_rate", "-1"], ["learning_rate is -1.0", "a positive rate"]),
        ("finetune", ["--adapter_dir", "."], ["adapter_dir is set but use_lora is not"]),
        ("finetune", ["--eval_strategy", "epoch", "--metric_for_best_model", "eval_nonsense"], ["'eval_nonsense'"]),
        ("finetune", ["--world_dir", "."], ["is not a world"]),
        ("pretrain", ["--vocab_size", "100"], ["vocab_size is 100", "at least 258"]),
        ("pretrain", ["--model_type", "nosuchmodel"], ["model_type 'nosuchmodel'"]),
        ("pretrain", ["--hidden_size", "-5"], ["hidden_size must be a positive integer"]),
        ("pretrain", ["--train_files", "nothere.txt"], ["'nothere.txt', which is not there"]),
        ("pretrain", ["--per_device_train_batch_size", "0"], ["per_device_train_batch_size is 0"]),
    ],
)
def test_training_commands_check_their_settings_before_writing_or_training(
    command, flags, words, world_dir, tmp_path, capsys, monkeypatch
):
    """The pre-training and fine-tuning commands refuse what their runs would refuse later (after writing a world,
    or at the first step or evaluation), and write nothing."""
    monkeypatch.chdir(tmp_path)
    base = ["--output_dir", "out"]
    if command == "finetune":  # an existing folder stands in for the model: the checks do not load it
        base += ["--model_dir", str(world_dir), "--world_dir", str(world_dir), "--finetune_size", "6"]
    with pytest.raises(SystemExit) as stopped:
        import_module(f"modeling.cli.{command}").main([*base, *flags])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines
    assert list(tmp_path.iterdir()) == []
