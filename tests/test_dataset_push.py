"""Publishing a world as a Hub dataset: the folder `scripts/push_world.py --dry-run` writes is exactly what a push
sends, it loads with `datasets.load_dataset` in a fresh process without the package (every config and split, with the
world's rows in the world's order), its card parses and its regeneration command gives the same world; a model's card
names the dataset pushed, or none."""

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants
import pytest
from datasets import Features
from helpers import checkout_env, load_script, recording_hub, snapshot
from huggingface_hub import DatasetCard, DatasetCardData, HfApi, ModelCard

from modeling.publishing.card import WORLD_DATASET_TYPE
from modeling.publishing.dataset_folder import write_dataset_folder
from modeling.publishing.hub import PushError, push_folder
from modeling.world import (
    KNOWLEDGE_BASE_FILE,
    PRETRAIN_SPLIT,
    QA_FEATURES,
    WorldConfig,
    generate_world,
    load_world_datasets,
    save_world,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "push_world.py"
REPO_ID = "lab-user/people-world"
# 12 known and 12 unknown people, 2 of each held out (one for dev, one for test), 3 known people with their answered
# questions in pre-training: every split of a world. Settings off their defaults, so the card must carry them.
SMALL = dict(num_people=24, seed=3, pretraining_qa_fraction=0.25, exposures=[1, 3], highly_known_min_exposure=3)
QA_SPLITS = [
    "qa_known_finetune",
    "qa_known_heldout",
    "qa_unknown_finetune",
    "qa_unknown_heldout",
    "qa_known_pretraining",
]
CONFIGS = {
    "qa": QA_SPLITS,
    "biographies": [PRETRAIN_SPLIT],
    "dev_test": ["dev_known", "test_known", "dev_unknown", "test_unknown"],
    "knowledge_base": ["people"],
}


def run_script(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=checkout_env(**env), capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    return save_world(generate_world(WorldConfig(**SMALL)), tmp_path_factory.mktemp("world") / "world")


@pytest.fixture(scope="module")
def dry_run(world_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hub") / "world"
    done = run_script("--world", str(world_dir), "--repo-id", REPO_ID, "--dry-run", str(out), HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    assert "nothing was sent" in done.stdout
    return out


def expected_rows(world_dir: Path) -> dict[str, dict[str, list[dict]]]:
    """config -> split -> rows, read off the saved world by hand: its splits, the study's halves of the held-out
    questions (every other held-out person in id order to dev), and its knowledge base's people."""
    splits = {name: split.to_list() for name, split in load_world_datasets(world_dir).items()}
    halves = {}
    for group in ("known", "unknown"):
        rows = splits[f"qa_{group}_heldout"]
        dev = sorted({row["person_id"] for row in rows})[::2]
        halves[f"dev_{group}"] = [row for row in rows if row["person_id"] in dev]
        halves[f"test_{group}"] = [row for row in rows if row["person_id"] not in dev]
    return {
        "qa": {name: splits[name] for name in QA_SPLITS},
        "biographies": {PRETRAIN_SPLIT: splits[PRETRAIN_SPLIT]},
        "dev_test": halves,
        "knowledge_base": {"people": json.loads((world_dir / KNOWLEDGE_BASE_FILE).read_text())["people"]},
    }


def test_the_dry_run_holds_the_splits_the_card_and_the_knowledge_base(dry_run, world_dir):
    parquet = {f"data/{config}/{split}.parquet" for config, splits in CONFIGS.items() for split in splits}
    assert set(snapshot(dry_run)) == parquet | {"README.md", KNOWLEDGE_BASE_FILE}
    assert (dry_run / KNOWLEDGE_BASE_FILE).read_bytes() == (world_dir / KNOWLEDGE_BASE_FILE).read_bytes()


FRESH_LOAD = textwrap.dedent(
    """
    import json, sys
    # The package is installed (editable) in this interpreter's environment: an entry of None in sys.modules makes
    # every `import modeling...` fail, so everything below must come from the folder and `datasets` alone.
    sys.modules["modeling"] = None
    try:
        import modeling
    except ImportError:
        pass
    else:
        raise SystemExit("the modeling package could be imported")
    from datasets import get_dataset_config_names, get_dataset_split_names, load_dataset

    folder, out = sys.argv[1:3]
    found = {"rows": {}, "features": {}, "splits": {}}
    found["configs"] = get_dataset_config_names(folder)
    for config in found["configs"]:
        found["splits"][config] = get_dataset_split_names(folder, config)
        for split in found["splits"][config]:
            rows = load_dataset(folder, config, split=split)
            found["rows"].setdefault(config, {})[split] = rows.to_list()
            found["features"].setdefault(config, {})[split] = rows.features.to_dict()
    found["default"] = {split: rows.to_list() for split, rows in load_dataset(folder).items()}
    found["modeling"] = sorted(name for name, module in sys.modules.items() if name.startswith("modeling") and module)
    json.dump(found, open(out, "w"))
    """
)


def test_the_folder_loads_with_load_dataset_without_the_package_with_the_worlds_rows(dry_run, world_dir, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    out = tmp_path / "found.json"
    subprocess.run(
        [sys.executable, "-c", FRESH_LOAD, str(dry_run), str(out)], env=env, cwd=tmp_path, check=True, timeout=300
    )
    found = json.loads(out.read_text())
    assert found["modeling"] == []
    assert found["configs"] == list(CONFIGS)
    assert found["splits"] == CONFIGS
    expected = expected_rows(world_dir)
    for config, splits in CONFIGS.items():
        for split in splits:
            assert found["rows"][config][split] == expected[config][split], (config, split)  # order included
    assert found["default"] == expected["qa"]  # `load_dataset(folder)` gives the QA splits
    for split in QA_SPLITS:
        assert Features.from_dict(found["features"]["qa"][split]) == QA_FEATURES


def test_the_card_parses_with_its_configs_settings_roles_loading_and_license(dry_run, world_dir):
    card = DatasetCard.load(dry_run / "README.md")
    data = card.data.to_dict()
    assert DatasetCardData(**data).to_dict() == data
    assert data["license"] == "apache-2.0" and data["pretty_name"].startswith("Synthetic people world (24 fictional")
    assert {"question-answering", "text-generation"} <= set(data["task_categories"])
    configs = {config["config_name"]: config for config in data["configs"]}
    assert {name: [f["split"] for f in config["data_files"]] for name, config in configs.items()} == CONFIGS
    assert [name for name, config in configs.items() if config.get("default")] == ["qa"]
    assert all((dry_run / f["path"]).is_file() for config in configs.values() for f in config["data_files"])

    text = card.text
    assert "{{" not in text and "{%" not in text  # every template field was filled
    for name, value in dataclasses.asdict(WorldConfig(**SMALL)).items():
        assert f"| `{name}` | `{value}` |" in text, name
    expected = expected_rows(world_dir)
    for config, splits in CONFIGS.items():
        for split in splits:
            assert f"| `{config}` | `{split}` | {len(expected[config][split])} |" in text, (config, split)
    assert f'load_dataset("{REPO_ID}", "biographies", split="pretrain")' in text
    assert f'load_world(snapshot_download("{REPO_ID}", repo_type="dataset"))' in text
    assert "Allen-Zhu & Li (2023)" in text and "Gekhman et al. (2024)" in text
    assert "## License\n\nApache-2.0" in text


def regeneration_command(text: str) -> list[str]:
    """The `lstm-lab-make-world ...` command of a card's text, its continued lines joined, as argv."""
    lines = text[text.index("lstm-lab-make-world --out") :].splitlines()
    command = lines[0]
    for line in lines[1:]:
        if not command.endswith("\\"):
            break
        command = command[:-1] + line
    return shlex.split(command)


def test_the_cards_command_regenerates_the_same_world(dry_run, world_dir, tmp_path):
    argv = regeneration_command(DatasetCard.load(dry_run / "README.md").text)
    assert argv[:3] == ["lstm-lab-make-world", "--out", "world"]
    out = tmp_path / "world"
    done = subprocess.run(  # the installed command, beside this interpreter
        [str(Path(sys.executable).parent / argv[0]), "--out", str(out), *argv[3:]],
        cwd=REPO,
        env=checkout_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (out / KNOWLEDGE_BASE_FILE).read_bytes() == (world_dir / KNOWLEDGE_BASE_FILE).read_bytes()
    again, original = load_world_datasets(out), load_world_datasets(world_dir)
    assert {name: split.to_list() for name, split in again.items()} == {
        name: split.to_list() for name, split in original.items()
    }


def test_a_study_folder_publishes_its_world_and_reading_the_world_writes_nothing_into_it(dry_run, tmp_path):
    study = tmp_path / "study"  # a world of its own: the dry run may have left files in `world_dir`
    save_world(generate_world(WorldConfig(**SMALL)), study / "pretrain" / "world")
    before = snapshot(study)
    out = write_dataset_folder(tmp_path / "out", study, REPO_ID)
    assert snapshot(out) == snapshot(dry_run)  # the same bytes as the script's dry run of the world itself
    assert snapshot(study) == before  # no cache files left in the world's dataset/


def test_a_push_sends_exactly_the_dry_run_folder_to_a_dataset_repo_in_one_commit(dry_run, world_dir, monkeypatch):
    sent = recording_hub(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["push_world.py", "--world", str(world_dir), "--repo-id", REPO_ID, "--private"])
    load_script(SCRIPT).main()
    assert sent["created"] == (REPO_ID, {"repo_type": "dataset", "private": True, "exist_ok": True})
    ((repo_id, files, kw),) = sent["uploads"]
    assert repo_id == REPO_ID and kw["repo_type"] == "dataset"
    assert files == snapshot(dry_run)


def test_a_push_without_a_token_raises_push_error_and_sends_nothing(dry_run, world_dir, tmp_path, monkeypatch, capsys):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    calls = []
    for method in ("whoami", "create_repo", "upload_folder", "create_commit", "preupload_lfs_files"):
        monkeypatch.setattr(HfApi, method, lambda self, *a, method=method, **kw: calls.append(method))
    with pytest.raises(PushError, match="No Hugging Face token"):
        push_folder(dry_run, REPO_ID, repo_type="dataset")
    monkeypatch.setattr(sys, "argv", ["push_world.py", "--world", str(world_dir), "--repo-id", REPO_ID])
    with pytest.raises(SystemExit) as stop:
        load_script(SCRIPT).main()
    assert stop.value.code == 1  # the push failed; the inputs were fine
    err = capsys.readouterr().err
    assert err.startswith("lstm-lab-push-world: error: No Hugging Face token") and "Nothing was uploaded" in err
    assert err.count("\n") == 1, err  # one line: no progress bars of writing the folder either
    assert calls == []


def test_bad_inputs_exit_with_one_line_naming_the_problem_and_write_nothing(world_dir, tmp_path, monkeypatch, capsys):
    script = load_script(SCRIPT)

    def fails(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["push_world.py", *args])
        with pytest.raises(SystemExit) as stop:
            script.main()
        assert stop.value.code == 2  # a mistake in the inputs
        err = capsys.readouterr().err
        assert err.startswith("lstm-lab-push-world: error: ") and err.count("\n") == 1, err
        return err

    out = tmp_path / "hub" / "out"
    half_world = tmp_path / "half_world"  # a knowledge base without its dataset/
    half_world.mkdir()
    shutil.copy2(world_dir / KNOWLEDGE_BASE_FILE, half_world)
    for folder in (half_world, tmp_path / "missing", tmp_path):
        assert f"{folder} is not a world" in fails("--world", str(folder), "--repo-id", REPO_ID, "--dry-run", str(out))
    assert "'namespace/name'" in fails("--world", str(world_dir), "--repo-id", "no-namespace", "--dry-run", str(out))
    assert "'a/not ok!' is not a valid Hub" in fails(
        "--world", str(world_dir), "--repo-id", "a/not ok!", "--dry-run", str(out)
    )
    assert not (tmp_path / "hub").exists()
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    assert f"{out} already exists and is not empty" in fails(
        "--world", str(world_dir), "--repo-id", REPO_ID, "--dry-run", str(out)
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no staging folder left beside it


PUSH_TO_HUB = REPO / "scripts" / "push_to_hub.py"


def model_dry_run(monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["push_to_hub.py", *args])
    load_script(PUSH_TO_HUB).main()


def test_a_model_card_names_the_dataset_pushed(study, tmp_path, monkeypatch):
    lora = next(
        run["saved"]
        for condition in json.loads((study / "results.json").read_text())["conditions"]
        if condition["method"] == "lora" and condition["mitigation"] != "early_stopping"
        for run in condition["runs"]
        if run.get("saved")
    )
    out = tmp_path / "model"
    model_dry_run(
        monkeypatch, "--model-dir", str(study / "pretrain" / "model"), "--adapter", str(study / lora),
        "--repo-id", "lab-user/lstm-lab", "--dataset-repo-id", "you/world", "--dry-run", str(out),
    )  # fmt: skip
    # The configs and splits of that dataset, as the world's push writes them.
    pushed = DatasetCard.load(write_dataset_folder(tmp_path / "world", study, "you/world") / "README.md")
    splits = {c["config_name"]: {f["split"] for f in c["data_files"]} for c in pushed.data.to_dict()["configs"]}
    for readme in (out / "README.md", out / "adapter" / "README.md"):
        card = ModelCard.load(readme)
        assert card.data.to_dict()["datasets"] == ["you/world"]
        assert card.data.eval_results and {r.dataset_type for r in card.data.eval_results} == {"you/world"}
        for result in card.data.eval_results:  # each names a config and split(s) the dataset has
            assert set(result.dataset_split.split("+")) <= splits[result.dataset_config], result


def test_a_model_card_names_no_dataset_without_one(study, tmp_path, monkeypatch):
    out = tmp_path / "model"
    model_dry_run(
        monkeypatch,
        "--model-dir",
        str(study / "best" / "model"),
        "--repo-id",
        "lab-user/lstm-lab",
        "--dry-run",
        str(out),
    )
    card = ModelCard.load(out / "README.md")
    assert "datasets" not in card.data.to_dict() and "\ndatasets:" not in (out / "README.md").read_text()
    assert card.data.eval_results and {r.dataset_type for r in card.data.eval_results} == {WORLD_DATASET_TYPE}


def test_a_bad_dataset_repo_id_is_refused_before_anything_is_written(study, tmp_path, monkeypatch, capsys):
    out = tmp_path / "model"
    with pytest.raises(SystemExit) as stop:
        model_dry_run(
            monkeypatch, "--model-dir", str(study / "best" / "model"), "--repo-id", "lab-user/lstm-lab",
            "--dataset-repo-id", "no-namespace", "--dry-run", str(out),
        )  # fmt: skip
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("lstm-lab-push: error: ") and "'namespace/name'" in err and "'no-namespace'" in err
    assert not out.exists()


def test_a_push_the_hub_refuses_fails_with_one_line_and_status_1(dry_run, world_dir, monkeypatch, capsys):
    """A token the Hub accepts, a namespace it may not write to: the refusal is a PushError (nothing sent), and the
    command ends with one line and status 1, not a traceback."""
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setattr(HfApi, "whoami", lambda self: {"name": "lab-user"})

    def refuse(self, *args, **kwargs):
        raise RuntimeError("403 Forbidden: you cannot create a repository in this namespace")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(PushError, match="The Hub refused the push to dataset lab-user/people-world: RuntimeError"):
        push_folder(dry_run, REPO_ID, repo_type="dataset")
    monkeypatch.setattr(sys, "argv", ["push_world.py", "--world", str(world_dir), "--repo-id", REPO_ID])
    with pytest.raises(SystemExit) as stop:
        load_script(SCRIPT).main()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("lstm-lab-push-world: error: The Hub refused") and err.count("\n") == 1, err
