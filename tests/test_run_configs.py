"""The run configs in configs/: each starts with the command that runs it and holds only keys its script knows."""

import re
from pathlib import Path

import pytest
from transformers import TrainingArguments
from trl import SFTConfig

from modeling import finetuning, pretraining
from modeling.run_config import parse_run_config

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "pretrain": ((pretraining.PretrainArguments, TrainingArguments), pretraining.DEFAULTS),
    "finetune": ((finetuning.FinetuneArguments, SFTConfig), finetuning.DEFAULTS),
}


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_a_run_config_names_its_command_and_parses(path):
    first_line = path.read_text().splitlines()[0]
    command = re.match(rf"# python scripts/(\w+)\.py configs/{re.escape(path.name)}\b", first_line)
    assert command and command.group(1) in SCRIPTS, first_line
    dataclass_types, defaults = SCRIPTS[command.group(1)]
    parsed = parse_run_config(dataclass_types, [str(path)], defaults)
    assert parsed[1].output_dir.startswith("runs/")
