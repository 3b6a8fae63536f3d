"""The folder a study's model is published as: what `scripts/push_to_hub.py` uploads, or writes with `--dry-run`.

README.md          the model card (hub_card.md filled from the study)
config.json, model.safetensors, generation_config.json, tokenizer files,
configuration_lstm.py, modeling_lstm.py, tokenization_lstm.py   (the model's saved folder, as it is)
plots/*.png        the study's plots the card shows
study_results.json the study's results.json, the source of every figure on the card
adapter/           with --adapter: the PEFT adapter files and the adapter's own README.md
"""

import json
import shutil
from pathlib import Path

from ..checkpoints import load_model_and_tokenizer
from .card import PLOTS, build_adapter_card, build_model_card, find_study_model
from .hub import check_repo_id, copy_files, write_folder


def write_model_folder(
    out: str | Path,
    model_dir: str | Path,
    study_dir: str | Path,
    repo_id: str,
    template_path: str | Path,
    adapter_dir: str | Path | None = None,
    base_model: str | None = None,
    dataset_repo_id: str | None = None,
) -> Path:
    """Write the folder that publishes `model_dir` (a model of the study in `study_dir`) as `repo_id` into `out`;
    its card names `dataset_repo_id`, if given, as the dataset the study's world was published as.

    Raises:
        FileExistsError: if `out` exists and is not empty.
        FileNotFoundError, ValueError: if `study_dir` is not a study, or `model_dir` (or `adapter_dir`) is not one of
            its models; if `repo_id`, `base_model` or `dataset_repo_id` is no Hub id, or a base model is given for the
            pre-trained one.
        ValueError: if the adapter was trained on another base model than `model_dir` (`load_adapter`'s check).
    """
    check_repo_id(repo_id)
    if dataset_repo_id is not None:
        check_repo_id(dataset_repo_id)
    model = find_study_model(study_dir, model_dir)
    if base_model is not None:
        if model.condition is None:
            raise ValueError(f"--base-model {base_model}: {model_dir} is the pre-trained model, it has no base model")
        check_repo_id(base_model)
    adapter = find_study_model(study_dir, adapter_dir) if adapter_dir is not None else None
    if adapter is not None:
        if adapter.condition is None or adapter.condition["method"] != "lora":
            raise ValueError(f"--adapter {adapter_dir} is not a LoRA adapter of the study")
        load_model_and_tokenizer(model_dir, adapter_dir, merge=False)  # refuses an adapter of another base model

    def fill(folder: Path) -> None:
        copy_files(model_dir, folder)
        card = build_model_card(
            model, model_dir, repo_id, template_path, base_model=base_model, adapter=adapter,
            dataset_repo_id=dataset_repo_id,
        )  # fmt: skip
        card.save(folder / "README.md")
        for name in PLOTS:
            plot = model.study_dir / f"{name}.png"
            if plot.is_file():
                (folder / "plots").mkdir(exist_ok=True)
                shutil.copy2(plot, folder / "plots" / plot.name)
        shutil.copy2(model.study_dir / "results.json", folder / "study_results.json")
        if adapter is not None:
            copy_files(adapter_dir, folder / "adapter")
            # The base recorded at training is a local folder; published, it is this repository's root.
            for name, key in (("adapter_config.json", "base_model_name_or_path"), ("base_model.json", "name_or_path")):
                path = folder / "adapter" / name
                record = json.loads(path.read_text(encoding="utf-8"))
                path.write_text(json.dumps({**record, key: repo_id}, indent=2) + "\n", encoding="utf-8")
            build_adapter_card(adapter, repo_id, dataset_repo_id).save(folder / "adapter" / "README.md")

    return write_folder(out, fill)


__all__ = ["write_model_folder"]
