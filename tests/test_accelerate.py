"""The launch configs in configs/accelerate, and training under `accelerate launch` on two processes (gloo on the CPU)
ending where one process ends."""

import json
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from helpers import CORPUS, REPO, accelerate_launch
from transformers import TrainingArguments

from modeling import LSTMForCausalLM
from modeling.checkpoints import load_model_and_tokenizer
from modeling.run_config import parse_run_config
from modeling.training.pretraining import DEFAULTS, PretrainArguments, pretrain

CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_launch_configs_load_and_say_how_to_run_them(path):
    config = load_config_from_file(str(path))
    assert path.read_text().startswith(f"# accelerate launch --config_file configs/accelerate/{path.name}") or (
        path.stem == "multi_machine" and "--config_file configs/accelerate/multi_machine.yaml" in path.read_text()
    )
    if path.stem == "cpu_2_processes":
        # The combination that forms a 2-process gloo group without MPI (MULTI_CPU would start one process).
        assert (config.distributed_type.value, config.use_cpu, config.num_processes) == ("MULTI_GPU", True, 2)
    if path.stem == "fsdp":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] in LSTMForCausalLM._no_split_modules
        assert config.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    if path.stem == "multi_machine":
        to_fill = sorted(k for k, v in config.to_dict().items() if v == "FILL_IN")
        assert to_fill == ["main_process_ip", "num_processes"]
    assert {p.stem for p in CONFIGS} == {"cpu_2_processes", "single_gpu", "multi_gpu", "multi_machine", "fsdp"}


def write_corpus(folder: Path) -> Path:
    """100 short documents: 80 train and 20 held out with eval_fraction 0.2, so 10 full steps of 8 per epoch."""
    path = folder / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in CORPUS))
    return path


@pytest.mark.learns
def test_two_processes_end_with_the_weights_of_one(tmp_path):
    """The same global batch (8 = 1 x 8 = 2 x 4) and dropout 0: two processes averaging gradients over gloo train
    the same model as one. The loss is averaged over the tokens of the whole global batch (transformers gathers the
    token count across processes), not per process, or rows of different lengths would weigh differently."""
    corpus = write_corpus(tmp_path)
    common = ["--train_files", str(corpus), "--eval_fraction", "0.2", "--vocab_size", "300", "--num_layers", "1"]
    common += ["--embedding_dim", "16", "--hidden_size", "32", "--num_train_epochs", "2", "--learning_rate", "0.01"]
    one = tmp_path / "one"
    argv = [*common, "--output_dir", str(one), "--per_device_train_batch_size", "8"]
    pretrain(*parse_run_config((PretrainArguments, TrainingArguments), argv, DEFAULTS))
    two = tmp_path / "two"
    script = [str(REPO / "scripts" / "pretrain.py"), *common, "--output_dir", str(two)]
    result = accelerate_launch(*script, "--per_device_train_batch_size", "4", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # World size 2 as the training itself saw it: both processes report 8 sequences per step (4 each).
    assert result.stdout.count("8 sequences per step") == 2, result.stdout
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (one, two)]
    assert [m["num_processes"] for m in metrics] == [1, 2]
    models = [load_model_and_tokenizer(run / "model")[0].state_dict() for run in (one, two)]
    torch.manual_seed(0)  # the seed pretrain() builds the model under: the weights before training
    start = LSTMForCausalLM(load_model_and_tokenizer(one / "model")[0].config).state_dict()
    moved = max((models[0][k] - start[k]).abs().max().item() for k in models[0])
    difference = max((models[0][k] - models[1][k]).abs().max().item() for k in models[0])
    print(f"trained weights moved up to {moved:.3g}; one vs two processes differ by at most {difference:.3g}")
    assert moved > 0.05 and difference < 1e-5, (moved, difference)
