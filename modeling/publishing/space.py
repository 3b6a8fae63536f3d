"""The demo as a Hugging Face Space (Gradio SDK): a folder that runs on its own.

README.md          the Space card (sdk: gradio, app_file: app.py)
app.py             builds the demo over study/ and launches it
requirements.txt   the package's dependencies (the Space installs Gradio itself, at the card's sdk_version)
modeling/          this package, as source
study/             what the demo reads of the study: results.json, headline.png, the world's knowledge base
                   and the three models, at the paths results.json names
"""

import importlib.metadata
import json
import shutil
from pathlib import Path

import gradio
from huggingface_hub import SpaceCard, SpaceCardData

from .card import architecture_name
from .demo import demo_conditions
from .hub import check_repo_id, copy_files, write_folder

PACKAGE_DIR = Path(__file__).resolve().parents[1]
DISTRIBUTION = "lstm-hallucination-lab"

APP = '''"""The LSTM hallucination lab's demo (written by scripts/demo.py --space-id): three models of one study answer
questions about the people of an invented world, with their confidence and a verdict against the record."""

from pathlib import Path

from modeling.publishing.demo import DemoLab
from modeling.publishing.demo_app import THEME, build_app

build_app(DemoLab(Path(__file__).resolve().parent / "study")).launch(theme=THEME)
'''

SPACE_TEXT = """
# LSTM hallucination lab

Ask three models of one study about the people of an invented world: the pre-trained {architecture}, the same model
fine-tuned on questions partly about people it never read about, and one fine-tuned to say "I don't know" to those.
Each answer comes with its confidence and its verdict against the world's record (correct, hallucinated or
abstained).
{model_line}
"""


def space_requirements() -> list[str]:
    """The package's own dependencies, without its extras and without Gradio (the Space's SDK provides it)."""
    try:
        requirements = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"{DISTRIBUTION} is not installed, so its dependencies are unknown: run scripts/setup.sh"
        ) from None
    return [r for r in requirements if "extra ==" not in r and not r.lower().startswith("gradio")]


def write_space_folder(out: str | Path, study_dir: str | Path, model_repo: str | None = None) -> Path:
    """Write the Space folder of the demo over the study in `study_dir` into `out` (see the module docstring).

    Args:
        model_repo: the Hub id of a model published from the study, named on the Space card.

    Raises:
        FileExistsError: if `out` exists and is not empty.
        ValueError: as `demo_conditions`, or if `model_repo` is no Hub id.
    """
    study_dir = Path(study_dir)
    results = json.loads((study_dir / "results.json").read_text(encoding="utf-8"))
    conditions = demo_conditions(results)
    if model_repo is not None:
        check_repo_id(model_repo)
    model_type = json.loads((study_dir / "pretrain" / "model" / "config.json").read_text(encoding="utf-8"))[
        "model_type"
    ]
    architecture = architecture_name(model_type)

    def fill(folder: Path) -> None:
        study = folder / "study"
        study.mkdir()
        shutil.copy2(study_dir / "results.json", study / "results.json")
        if (study_dir / "headline.png").is_file():
            shutil.copy2(study_dir / "headline.png", study / "headline.png")
        copy_files(study_dir / "pretrain" / "model", study / "pretrain" / "model")
        (study / "pretrain" / "world").mkdir()
        shutil.copy2(study_dir / "pretrain" / "world" / "knowledge_base.json", study / "pretrain" / "world")
        for condition in conditions.values():
            copy_files(study_dir / condition["saved"], study / condition["saved"])
        shutil.copytree(PACKAGE_DIR, folder / "modeling", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (folder / "app.py").write_text(APP, encoding="utf-8")
        (folder / "requirements.txt").write_text("\n".join(space_requirements()) + "\n", encoding="utf-8")
        data = SpaceCardData(
            title="LSTM hallucination lab",
            sdk="gradio",
            sdk_version=gradio.__version__,
            app_file="app.py",
            license="apache-2.0",
            models=[model_repo] if model_repo else None,
            tags=["hallucination", architecture.lower(), "synthetic-data"],
        )
        model_line = ""
        if model_repo:
            model_line = f"\nThe published model: [{model_repo}](https://huggingface.co/{model_repo}).\n"
        text = SPACE_TEXT.format(model_line=model_line, architecture=architecture)
        card = SpaceCard(f"---\n{data.to_yaml()}\n---\n" + text)
        card.save(folder / "README.md")

    return write_folder(out, fill)


__all__ = ["space_requirements", "write_space_folder"]
