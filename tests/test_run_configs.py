"""The run configs in configs/: each starts with the command that runs it and holds only keys its script knows."""

import re
import runpy
import sys
from pathlib import Path

import pytest
from transformers import TrainingArguments
from trl import SFTConfig

import modeling.cli.study
import modeling.run_config
from modeling.run_config import parse_run_config
from modeling.study import StudyArguments, SweepArguments
from modeling.study.architectures import CompareArguments
from modeling.training import finetuning, pretraining

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "pretrain": ((pretraining.PretrainArguments, TrainingArguments), pretraining.DEFAULTS),
    "finetune": ((finetuning.FinetuneArguments, SFTConfig), finetuning.DEFAULTS),
    "study": ((StudyArguments,), None),
    "sweep": ((SweepArguments,), None),
    "compare": ((CompareArguments,), None),
}
CONFIGS = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "configs" / "study").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_a_run_config_names_its_command_and_parses(path):
    first_line = path.read_text().splitlines()[0]
    relative = path.relative_to(REPO).as_posix()
    command = re.match(rf"# python scripts/(\w+)\.py {re.escape(relative)}\b", first_line)
    assert command and command.group(1) in SCRIPTS, first_line
    dataclass_types, defaults = SCRIPTS[command.group(1)]
    parsed = parse_run_config(dataclass_types, [str(path)], defaults)
    assert parsed[-1].output_dir.startswith("runs/")
    if command.group(1) in ("study", "sweep"):  # the configs it names exist and parse too
        study = parsed[0]
        for name, config in (("pretrain", study.pretrain_config), ("finetune", study.finetune_config)):
            types, defaults = SCRIPTS[name]
            parse_run_config(types, [str(REPO / config)], defaults)


def test_the_study_api_and_the_command_line_share_their_defaults(monkeypatch):
    """`run_study(StudyArguments())` and `scripts/study.py` with no arguments run the same study: the defaults live in
    the dataclass alone."""
    ran = []
    monkeypatch.setattr(modeling.cli.study, "run_study", ran.append)  # the command's own reference to it
    monkeypatch.setattr(sys, "argv", ["study.py"])
    runpy.run_path(str(REPO / "scripts" / "study.py"), run_name="__main__")
    assert ran == [StudyArguments()] and ran[0].lora_learning_rate == 0.003


@pytest.mark.parametrize("native", [True, False])
def test_bf16_auto_takes_the_machines_native_support_from_a_file_an_override_or_a_flag(tmp_path, monkeypatch, native):
    monkeypatch.setitem(modeling.run_config.AUTO_SETTINGS, "bf16", lambda: native)
    config = tmp_path / "auto.yaml"
    config.write_text("bf16: auto\n")
    types, defaults = SCRIPTS["pretrain"]
    for argv, overrides in (([str(config)], None), ([], {"bf16": "auto"}), (["--bf16", "auto"], None),
                            (["--bf16=auto"], None)):  # fmt: skip
        assert parse_run_config(types, argv, defaults, overrides)[1].bf16 is native, (argv, overrides)
    # A flag still overrides the file: float32 on any machine.
    assert parse_run_config(types, [str(config), "--bf16", "false"], defaults)[1].bf16 is False
    # And "auto" means nothing to other settings.
    with pytest.raises(SystemExit):
        parse_run_config(types, ["--packing", "auto"], defaults)
