"""Publishing a study's model: the folder `scripts/push_to_hub.py --dry-run` writes is exactly what a push sends, it
loads standalone (fresh process, no package, offline) with the Auto classes, `pipeline` and PEFT, and its card
parses with huggingface_hub and carries the study's own figures."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import checkout_env, load_script, recording_hub, snapshot
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from modeling.checkpoints import load_model_and_tokenizer
from modeling.publishing.card import CARD_FIGURES, WORLD_DATASET_TYPE, eval_results, find_study_model
from modeling.publishing.model_folder import write_model_folder

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "push_to_hub.py"
PROMPTS = ["Question: Where was", "The employer of"]  # two rows of different lengths
MODEL_FILES = {
    "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
    "configuration_lstm.py", "modeling_lstm.py", "tokenization_lstm.py",
}  # fmt: skip


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=checkout_env(**env), capture_output=True, text=True, timeout=300
    )


def conditions(study: Path) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads((study / "results.json").read_text())["conditions"]}


@pytest.fixture(scope="module")
def dry_run(study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "best"
    done = run_script(
        "--model-dir", str(study / "best" / "model"), "--repo-id", "lab-user/lstm-lab", "--dry-run", str(out),
        "--base-model", "lab-user/lstm-lab-pretrained",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "nothing was sent" in done.stdout
    return out


@pytest.fixture(scope="module")
def adapter_dry_run(study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "lora"
    write_model_folder(
        out,
        model_dir=study / "pretrain" / "model",
        study_dir=study,
        repo_id="lab-user/lstm-lab-lora",
        template_path=REPO / "hub_card.md",
        adapter_dir=study / conditions(study)["lora_u0_n6_none"]["saved"],
    )
    return out


def test_the_dry_run_holds_the_model_card_plots_and_results_and_nothing_else(dry_run, study):
    files = snapshot(dry_run)
    plots = {f"plots/{p.name}" for p in study.glob("*.png")}
    assert plots >= {"plots/headline.png"}
    assert set(files) == MODEL_FILES | plots | {"README.md", "study_results.json"}
    for name in MODEL_FILES:
        assert (dry_run / name).read_bytes() == (study / "best" / "model" / name).read_bytes(), name
    assert (dry_run / "study_results.json").read_bytes() == (study / "results.json").read_bytes()


def test_the_card_parses_and_its_model_index_holds_the_studys_figures(dry_run, study):
    card = ModelCard.load(dry_run / "README.md")  # strict: a model-index it cannot parse raises
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    # No --dataset-repo-id: no `datasets:`, which would name a dataset that does not exist (tests/test_dataset_push.py).
    assert data["license"] == "apache-2.0" and "datasets" not in data
    assert {"custom_code", "hallucination", "hallucination_lab_lstm"} <= set(data["tags"])
    assert data["base_model"] == "lab-user/lstm-lab-pretrained"
    # huggingface_hub's own checks: the metadata rebuilds a ModelCardData, and the model-index its EvalResults.
    assert ModelCardData(**data).to_dict() == data
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "lstm-lab"

    best = json.loads((study / "best" / "condition.json").read_text())
    assert {(r.dataset_config, r.metric_type): r.metric_value for r in results} == expected_figures(
        run_of(study, best["name"], best["training_seed"])
    )
    assert {r.dataset_split for r in results} == {"test"}
    assert all(r.task_type == "text-generation" and r.dataset_type == WORLD_DATASET_TYPE for r in results)


def run_of(study: Path, name: str, training_seed: int) -> dict:
    """One run of a condition of results.json, with the condition's description: what a card of its model shows."""
    condition = conditions(study)[name]
    return {**condition, **next(r for r in condition["runs"] if r["training_seed"] == training_seed)}


def expected_figures(condition: dict) -> dict[tuple[str, str], float]:
    """(dataset config, metric type) -> value, read off a run's record in results.json by hand."""
    last = condition["per_epoch"][-1]
    expected = {
        ("known", "accuracy"): last["test_known_accuracy"],
        ("known", "hallucination_rate"): last["test_known_hallucination_rate"],
        ("known", "abstention_rate"): last["test_known_abstention_rate"],
        ("highly_known", "accuracy"): last["test_highly_known_accuracy"],
        ("unknown", "hallucination_rate"): last["test_unknown_hallucination_rate"],
        ("unknown", "abstention_rate"): last["test_unknown_abstention_rate"],
        # None for a run the detectors did not judge (the card then leaves the figure out).
        ("all", "roc_auc"): (condition["detector"] or {"auroc": {}})["auroc"].get("confidence"),
    }
    return {key: value for key, value in expected.items() if value is not None}


def test_every_saved_model_of_the_study_gets_its_own_runs_figures(study):
    saved = [c for c in conditions(study).values() if c.get("saved")]
    assert {c["mitigation"] for c in saved} >= {"none", "abstention"} and {c["method"] for c in saved} == {
        "full",
        "lora",
    }
    for condition in saved:
        for run in (r for r in condition["runs"] if r.get("saved")):
            model = find_study_model(study, study / run["saved"])
            assert (model.condition["name"], model.condition["training_seed"]) == (
                condition["name"],
                run["training_seed"],
            )
            found = {(r.dataset_config, r.metric_type): r.metric_value for r in eval_results(model)}
            assert found == expected_figures(run_of(study, condition["name"], run["training_seed"])), run["saved"]


def test_each_figure_comes_from_its_own_field(study):
    """A record whose every figure differs, so a figure read from the wrong field shows (the tiny study's rates often
    coincide)."""
    model = find_study_model(study, study / "best" / "model")
    fields = [key for _, _, figures in CARD_FIGURES for _, key in figures]
    record = {key: 0.1 + i / 100 for i, key in enumerate(fields)}
    condition = {**model.condition, "per_epoch": [record], "detector": {"auroc": {"confidence": 0.77}}}
    found = {
        (r.dataset_config, r.metric_type): r.metric_value
        for r in eval_results(dataclasses.replace(model, condition=condition))
    }
    assert found == expected_figures(condition)


def test_the_card_text_shows_the_findings_the_plot_and_how_to_load(dry_run, study):
    text = ModelCard.load(dry_run / "README.md").text
    assert "![Held-out accuracy and hallucination per fine-tuning epoch](plots/headline.png)" in text
    assert 'from_pretrained("lab-user/lstm-lab", trust_remote_code=True)' in text
    assert "## Training data: a synthetic world" in text and "## Intended use and limits" in text
    assert "40 fictional people (world seed 0)" in text  # configs/tiny.yaml: 40 people
    assert text.lstrip().startswith("# lstm-lab\n\nA small LSTM language model (")
    assert "1. Test accuracy on known people falls as the share of unknown fine-tune examples grows" in text
    best = json.loads((study / "best" / "condition.json").read_text())
    assert f"(study condition `{best['name']}`, training seed {best['training_seed']})" in text
    assert "{{" not in text and "{%" not in text  # every template field was filled


FRESH_LOAD = textwrap.dedent(
    """
    import json, sys
    sys.modules["modeling"] = None  # our package must not be importable: everything comes from the folders
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    folder, adapter_root, out = sys.argv[1:4]
    prompts = sys.argv[4:]
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    generator = pipeline("text-generation", model=folder, trust_remote_code=True)
    text = generator(prompts[0], max_new_tokens=5, min_new_tokens=5, do_sample=False)[0]["generated_text"]
    base = AutoModelForCausalLM.from_pretrained(adapter_root, trust_remote_code=True)
    peft_model = PeftModel.from_pretrained(base, adapter_root + "/adapter").eval()
    with torch.no_grad():
        tensors = {"logits": model(**batch).logits, "peft_logits": peft_model(**batch).logits}
    torch.save(tensors, out + ".pt")
    json.dump({"text": text, "model_module": type(model).__module__}, open(out + ".json", "w"))
    """
)


def test_the_published_folders_load_standalone_offline(dry_run, adapter_dry_run, study, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    out = tmp_path / "fresh"
    subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(dry_run), str(adapter_dry_run), str(out), *PROMPTS],
        env=env,
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    result = json.loads(out.with_suffix(".json").read_text())
    tensors = torch.load(out.with_suffix(".pt"))
    assert result["model_module"].startswith("transformers_modules")  # the code shipped in the folder
    model, tokenizer = load_model_and_tokenizer(study / "best" / "model")
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    lora = study / conditions(study)["lora_u0_n6_none"]["saved"]
    peft_model, _ = load_model_and_tokenizer(study / "pretrain" / "model", lora, merge=False)
    with torch.no_grad():
        torch.testing.assert_close(tensors["logits"], model(**batch).logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(tensors["peft_logits"], peft_model(**batch).logits, rtol=1e-5, atol=1e-6)
        plain, _ = load_model_and_tokenizer(study / "pretrain" / "model")
        assert not torch.allclose(tensors["peft_logits"], plain(**batch).logits, atol=1e-4)  # the adapter acts
    greedy = model.generate(**tokenizer(PROMPTS[:1], return_tensors="pt"), max_new_tokens=5, min_new_tokens=5)
    assert result["text"] == tokenizer.decode(greedy[0])


def test_an_adapter_goes_in_adapter_with_its_own_card(adapter_dry_run, study):
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "base_model.json"} <= set(
        p.name for p in (adapter_dry_run / "adapter").iterdir()
    )
    card = ModelCard.load(adapter_dry_run / "adapter" / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model == "lab-user/lstm-lab-lora"
    lora = conditions(study)["lora_u0_n6_none"]
    found = {(r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert found[("known", "accuracy")] == lora["per_epoch"][-1]["test_known_accuracy"]
    root = ModelCard.load(adapter_dry_run / "README.md")
    # The root is the pre-trained model: its figures come from pre-training, not from the adapter's condition.
    metrics = json.loads((study / "pretrain" / "metrics.json").read_text())
    found = {(r.dataset_config, r.metric_type): r.metric_value for r in root.data.eval_results}
    assert found[("biographies", "perplexity")] == metrics["eval_perplexity"]
    assert 'PeftModel.from_pretrained(model, "lab-user/lstm-lab-lora", subfolder="adapter")' in root.text
    # A pre-trained model is shown continuing text, not answering questions it was never fine-tuned on.
    assert 'was born in"   # it continues text' in root.text and "Question:" not in root.text
    # Published, the adapter's base is this repository's root, not the folder it was trained from.
    config = json.loads((adapter_dry_run / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "lab-user/lstm-lab-lora"
    record = json.loads((adapter_dry_run / "adapter" / "base_model.json").read_text())
    original = json.loads((study / lora["saved"] / "base_model.json").read_text())
    assert record == {**original, "name_or_path": "lab-user/lstm-lab-lora"}


def test_a_push_sends_exactly_the_dry_run_folder_in_one_commit(dry_run, study, monkeypatch, tmp_path):
    sent = recording_hub(monkeypatch)
    argv = ["push_to_hub.py", "--model-dir", str(study / "best" / "model"), "--repo-id", "lab-user/lstm-lab"]
    monkeypatch.setattr(sys, "argv", [*argv, "--base-model", "lab-user/lstm-lab-pretrained", "--private"])
    load_script(SCRIPT).main()
    assert sent["created"] == ("lab-user/lstm-lab", {"repo_type": "model", "private": True, "exist_ok": True})
    ((repo_id, files, kw),) = sent["uploads"]
    assert repo_id == "lab-user/lstm-lab" and kw["repo_type"] == "model"
    assert files == snapshot(dry_run)


@pytest.mark.parametrize(
    "env, message",
    [
        ({"HF_TOKEN": ""}, "No Hugging Face token"),
        ({"HF_TOKEN": "hf_test_token", "HF_HUB_OFFLINE": "1"}, "Cannot push to the Hub"),
        # A port nothing listens on: the connection is refused, as without a network.
        ({"HF_TOKEN": "hf_test_token", "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "Cannot push"),
    ],
    ids=["no-token", "offline", "no-network"],
)
def test_a_push_without_token_or_network_fails_clearly_and_sends_nothing(study, tmp_path, env, message):
    done = run_script(
        "--model-dir", str(study / "best" / "model"), "--repo-id", "lab-user/lstm-lab",
        HF_HOME=str(tmp_path / "hf_home"), **env,
    )  # fmt: skip
    assert done.returncode == 1
    assert message in done.stderr and "Nothing was uploaded" in done.stderr
    assert "Traceback" not in done.stderr


def test_bad_inputs_are_refused_before_anything_is_written(study, tmp_path, monkeypatch, capsys):
    script = load_script(SCRIPT)

    def fails(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["push_to_hub.py", *args])
        with pytest.raises(SystemExit) as stop:
            script.main()
        assert stop.value.code == 2  # a mistake in the inputs, found before anything is written
        return str(stop.value.code) + capsys.readouterr().err

    out = tmp_path / "out"
    best = str(study / "best" / "model")
    assert "'namespace/name'" in fails("--model-dir", best, "--repo-id", "no-namespace", "--dry-run", str(out))
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "config.json").write_text("{}")
    message = fails("--model-dir", str(other), "--study", str(study), "--repo-id", "a/b", "--dry-run", str(out))
    assert "is none of the saved models or adapters of the study" in message
    assert "No study's results.json above" in fails(
        "--model-dir", str(other), "--repo-id", "a/b", "--dry-run", str(out)
    )
    lora = str(study / conditions(study)["lora_u0_n6_none"]["saved"])
    assert "is an adapter: give it as --adapter" in fails(
        "--model-dir", lora, "--repo-id", "a/b", "--dry-run", str(out)
    )
    # An adapter trained on the pre-trained model, offered with the fine-tuned one as its base.
    assert "base model" in fails("--model-dir", best, "--adapter", lora, "--repo-id", "a/b", "--dry-run", str(out))
    pretrained = str(study / "pretrain" / "model")
    assert "has no base model" in fails(
        "--model-dir", pretrained, "--repo-id", "a/b", "--base-model", "c/d", "--dry-run", str(out)
    )
    assert "not a valid Hub" in fails(
        "--model-dir", best, "--repo-id", "a/b", "--base-model", "a/not ok!", "--dry-run", str(out)
    )
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "not empty" in fails("--model-dir", best, "--repo-id", "a/b", "--dry-run", str(out))
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
