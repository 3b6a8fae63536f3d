"""Saving and loading: safetensors weights, remote code in a fresh process, and clear errors for bad folders."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import CORPUS, tiny_gpt2, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel

from modeling import LSTMForCausalLM, LSTMTokenizer, train_tokenizer
from modeling.checkpoints import load_model_and_tokenizer, save_atomically

PROMPT = "Ada Lovelace was born"
PROMPTS = [PROMPT, "Grace"]  # two rows of different lengths: the remote code's padding path runs too


@pytest.fixture
def saved(tmp_path, model, tokenizer):
    # Trained-looking weights: a load that re-ran the initialisation would no longer give the same logits.
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_save_pretrained_writes_weights_config_code_and_tokenizer(saved):
    files = set(os.listdir(saved))
    expected = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"}
    assert expected | {"configuration_lstm.py", "modeling_lstm.py", "tokenization_lstm.py"} <= files
    auto_map = json.loads((saved / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModelForCausalLM"] == "modeling_lstm.LSTMForCausalLM"
    assert auto_map["AutoModel"] == "modeling_lstm.LSTMModel"
    assert auto_map["AutoConfig"] == "configuration_lstm.LSTMConfig"
    assert "AutoTokenizer" in json.loads((saved / "tokenizer_config.json").read_text())["auto_map"]


def test_registered_auto_classes_load_identical_model(saved, model, tokenizer):
    loaded = AutoModelForCausalLM.from_pretrained(saved)
    assert type(loaded) is LSTMForCausalLM
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    # Equal weights, but oneDNN's packed kernel rounds in the last bits by where the weights lie in memory (seen:
    # 6e-9 on logits of about 5e-3 between a model and its reload), so this is closeness and not equality.
    torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=1e-5, atol=1e-7)
    assert loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling"] = None  # our package must not be importable: everything comes from the folder
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, pipeline

    folder, out = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    batch = tokenizer(sys.argv[3:], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        logits = model(**batch).logits
        generated = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    generator = pipeline("text-generation", model=folder, trust_remote_code=True)
    text = generator(sys.argv[3], max_new_tokens=6, min_new_tokens=6, do_sample=False)[0]["generated_text"]
    torch.save({"logits": logits, "ids": batch["input_ids"], "generated": generated}, out + ".pt")
    base = AutoModel.from_pretrained(folder, trust_remote_code=True)
    torch.testing.assert_close(model.get_input_embeddings().weight, base.get_input_embeddings().weight)
    json.dump({"model_class": type(model).__module__, "tokenizer_class": type(tokenizer).__name__, "text": text,
               "base_class": type(base).__name__},
              open(out + ".json", "w"))
    """
)


def test_remote_code_loads_in_a_fresh_process_without_the_package(saved, model, tokenizer, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    out = tmp_path / "remote"
    subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(saved), str(out), *PROMPTS], env=env, cwd=tmp_path, check=True
    )
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["model_class"].startswith("transformers_modules")  # the copy saved with the weights
    assert result["tokenizer_class"] == "LSTMTokenizer"
    assert result["base_class"] == "LSTMModel"
    tensors = torch.load(out.with_suffix(".pt"))
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    assert torch.equal(tensors["ids"], batch["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(tensors["logits"], model(**batch).logits, rtol=1e-5, atol=1e-7)
    expected = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(tensors["generated"], expected)
    alone = model.generate(
        **tokenizer(PROMPT, return_tensors="pt"), max_new_tokens=6, min_new_tokens=6, do_sample=False
    )
    assert result["text"] == tokenizer.decode(alone[0])


# Written by save_pretrained (tiny_model(seed=7), a tokenizer of CORPUS) when the three model files lay directly in
# modeling/, before the model had a sub-package of its own; expected.json holds the logits it gave then.
OLD_SAVED_FOLDER = Path(__file__).parent / "data" / "saved_lstm_v0_1"


def test_a_folder_saved_before_the_model_moved_to_its_subpackage_still_loads(tmp_path):
    """The package's Auto classes and, in a fresh process without the package, the remote code saved in the folder
    both load it and give the logits recorded when it was saved."""
    expected = json.loads((OLD_SAVED_FOLDER / "expected.json").read_text())
    recorded = torch.tensor(expected["last_logits_first_5"])
    model = AutoModelForCausalLM.from_pretrained(OLD_SAVED_FOLDER).eval()
    tokenizer = AutoTokenizer.from_pretrained(OLD_SAVED_FOLDER)
    assert type(model) is LSTMForCausalLM and type(tokenizer) is LSTMTokenizer
    batch = tokenizer(expected["prompts"], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits[:, -1, :5], recorded, rtol=1e-5, atol=1e-6)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    out = tmp_path / "remote"
    command = [sys.executable, "-c", REMOTE_SCRIPT, str(OLD_SAVED_FOLDER), str(out), *expected["prompts"]]
    subprocess.run(command, env=env, cwd=tmp_path, check=True)
    assert json.loads(out.with_suffix(".json").read_text())["model_class"].startswith("transformers_modules")
    remote = torch.load(out.with_suffix(".pt"))["logits"][:, -1, :5]
    torch.testing.assert_close(remote, recorded, rtol=1e-5, atol=1e-6)


def test_tokenizer_larger_than_the_model_is_refused(tmp_path, tokenizer):
    small = tiny_model(tokenizer)
    small.resize_token_embeddings(len(tokenizer) - 10)
    small.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(
        ValueError, match=f"has {len(tokenizer)} tokens but the model's vocab_size is {len(tokenizer) - 10}"
    ):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_tokenizer_with_added_tokens_beyond_the_model_is_refused(tmp_path, model):
    grown = train_tokenizer(CORPUS, vocab_size=320)  # the fixture's tokenizer, trained again to leave it alone
    grown.add_tokens(["<|new token|>"])
    model.save_pretrained(tmp_path)
    grown.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=f"has {len(grown)} tokens but the model's vocab_size is {len(grown) - 1}"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_tokenizer_with_other_special_tokens_is_refused(tmp_path, model):
    other = train_tokenizer(["completely different text"] * 5, vocab_size=300)
    other.add_special_tokens({"pad_token": "<|other pad|>"})
    model.save_pretrained(tmp_path)
    other.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape("pad token '<|other pad|>'") + ".*does not belong to this model"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights_name_the_file(saved, damage):
    weights = saved / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a safetensors file" * 4)
    with pytest.raises(OSError, match=r"model\.safetensors\) are corrupt or truncated"):
        AutoModelForCausalLM.from_pretrained(saved)


def test_missing_weights_fail_clearly(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(OSError, match="no file named model.safetensors") as error:
        AutoModelForCausalLM.from_pretrained(saved)
    assert "corrupt" not in str(error.value)  # missing is not corrupt: transformers' own error comes through


def test_a_saved_base_model_maps_every_auto_class(tmp_path, model):
    """transformers maps only the class being saved; ours adds the rest, so a saved LSTMModel loads as a causal LM
    with its remote code too."""
    model.model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map["AutoModel"] == "modeling_lstm.LSTMModel"
    assert auto_map["AutoModelForCausalLM"] == "modeling_lstm.LSTMForCausalLM"


def test_tokenizer_round_trips_through_auto_tokenizer(saved, tokenizer):
    loaded = AutoTokenizer.from_pretrained(saved)
    assert type(loaded) is type(tokenizer)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)
    assert loaded(PROMPT).input_ids == tokenizer(PROMPT).input_ids


TRAIN_REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer
    from transformers import TrainingArguments
    folder, out = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    rows = [{"input_ids": ids} for ids in tokenizer(sys.argv[3:] * 4)["input_ids"]]
    args = TrainingArguments(out, max_steps=2, save_strategy="steps", save_steps=2, per_device_train_batch_size=2,
                             learning_rate=0.01, report_to="none", use_cpu=True)
    Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False)).train()
    batch = tokenizer(sys.argv[3:], return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        torch.save({"ids": batch["input_ids"], "logits": model.eval()(**batch).logits}, out + "/trained.pt")
    """
)


def test_trainer_checkpoints_of_a_remote_code_model_carry_the_code(saved, tmp_path):
    """A user's own Trainer run over the model loaded as remote code (no package): its checkpoint holds the code and
    loads standalone in a fresh process with the trained weights."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    run = tmp_path / "run"
    command = [sys.executable, "-c", TRAIN_REMOTE_SCRIPT, str(saved), str(run), *PROMPTS]
    subprocess.run(command, env=env, cwd=tmp_path, check=True, capture_output=True)
    checkpoint = run / "checkpoint-2"
    assert {"configuration_lstm.py", "modeling_lstm.py", "tokenization_lstm.py"} <= {
        p.name for p in checkpoint.iterdir()
    }
    assert json.loads((checkpoint / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"].startswith(
        "modeling_lstm."
    )
    # A second fresh process, with another module cache: only what the checkpoint holds.
    env["HF_HOME"] = str(tmp_path / "hf_home_2")
    out = tmp_path / "reloaded"
    command = [sys.executable, "-c", REMOTE_SCRIPT, str(checkpoint), str(out), *PROMPTS]
    subprocess.run(command, env=env, cwd=tmp_path, check=True, capture_output=True)
    reloaded, trained = torch.load(out.with_suffix(".pt")), torch.load(run / "trained.pt")
    assert torch.equal(reloaded["ids"], trained["ids"])
    torch.testing.assert_close(reloaded["logits"], trained["logits"], rtol=1e-5, atol=1e-7)
    before = AutoModelForCausalLM.from_pretrained(saved)
    with torch.no_grad():  # training moved the weights: the checkpoint is not the folder it started from
        assert not torch.allclose(before.eval()(reloaded["ids"]).logits, trained["logits"], atol=1e-3)


@pytest.fixture
def saved_gpt2(tmp_path, tokenizer):
    """A tiny gpt2 built from scratch with our tokenizer, saved as pre-training saves it."""
    model = tiny_gpt2(tokenizer, max_position_embeddings=64)
    with torch.no_grad():  # GPT-2 starts with zero biases: a load that dropped them would go unseen
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return save_atomically(tmp_path / "gpt2", model, tokenizer), model


def test_a_transformer_saves_and_loads_with_our_tokenizer_through_the_auto_classes(saved_gpt2, tokenizer):
    folder, model = saved_gpt2
    loaded, loaded_tokenizer = load_model_and_tokenizer(folder)
    assert type(loaded) is GPT2LMHeadModel and type(loaded_tokenizer) is LSTMTokenizer
    assert type(AutoTokenizer.from_pretrained(folder)) is LSTMTokenizer
    batch = loaded_tokenizer(PROMPTS, return_tensors="pt", padding=True)  # left padding, set for generation
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits, rtol=1e-5, atol=1e-6)
    generated = loaded.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(generated, model.generate(**batch, max_new_tokens=6, min_new_tokens=6, do_sample=False))


GPT2_FRESH_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling"] = None  # our package must not be importable: everything comes from the folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, out = sys.argv[1], sys.argv[2]
    model = AutoModelForCausalLM.from_pretrained(folder).eval()  # gpt2 ships with transformers: no remote code
    result = {"model_class": type(model).__name__}
    for trust in (True, False):
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
        batch = tokenizer(sys.argv[3:], return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            torch.save({"ids": batch["input_ids"], "logits": model(**batch).logits}, f"{out}_{trust}.pt")
        result[str(trust)] = {"class": type(tokenizer).__name__, "decoded": tokenizer.decode(batch["input_ids"][0])}
    json.dump(result, open(out + ".json", "w"))
    """
)


def test_a_transformer_loads_in_a_fresh_process_without_the_package(saved_gpt2, tokenizer, tmp_path):
    """gpt2 ships with transformers; the tokenizer comes as the remote code saved with it (trust_remote_code) or,
    without, as the generic tokenizers backend of its tokenizer.json: the same ids and text either way."""
    folder, model = saved_gpt2
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    out = tmp_path / "fresh"
    subprocess.run(
        [sys.executable, "-c", GPT2_FRESH_SCRIPT, str(folder), str(out), *PROMPTS], env=env, cwd=tmp_path, check=True
    )
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["model_class"] == "GPT2LMHeadModel"
    assert (result["True"]["class"], result["False"]["class"]) == ("LSTMTokenizer", "TokenizersBackend")
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        expected = model(**batch).logits
    for trust in ("True", "False"):
        tensors = torch.load(tmp_path / f"fresh_{trust}.pt")
        assert torch.equal(tensors["ids"], batch["input_ids"]), trust
        torch.testing.assert_close(tensors["logits"], expected, rtol=1e-5, atol=1e-6)
        assert result[trust]["decoded"] == tokenizer.decode(batch["input_ids"][0])


def test_the_package_exports_the_model_names_of_its_model_folder():
    import modeling.lstm

    assert modeling.__all__ == modeling.lstm.__all__
    assert all(getattr(modeling, name) is getattr(modeling.lstm, name) for name in modeling.__all__)
