"""The model card of a model published from a study: metadata (`huggingface_hub.ModelCardData`, with the study's
measured factuality as `EvalResult`s, which become the card's `model-index`) and text, rendered from the
`hub_card.md` template by `huggingface_hub.ModelCard.from_template`.

Every figure on a card is read from the study's `results.json` (a fine-tuned model: its own run's last epoch, on the
held-out test people) or, for the pre-trained model, from `pretrain/metrics.json`; nothing is recomputed here.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from ..lstm.configuration_lstm import LSTMConfig
from ..study.report import finding_lines
from ..world import WorldConfig, load_world

# Every result's dataset type when the world was not published as a Hub dataset (`scripts/push_world.py`): a plain
# name, not a repository id, so the card then has no `datasets:` entry (it would name a dataset that does not exist).
WORLD_DATASET_TYPE = "synthetic-people-world"
TASK_TYPE = "text-generation"
TASK_NAME = "Closed-book questions about a synthetic world"
PRETRAINING_TASK_NAME = "Language modelling of a synthetic world's biographies"
# Study settings that say where and how a run went on its machine, not what was measured: left off the card.
LOCAL_SETTINGS = ("output_dir", "overwrite_output_dir", "num_threads")
TAGS = ("custom_code", "hallucination", "synthetic-data", "factuality")
PLOTS = (
    "headline",
    "mitigations",
    "detectors",
    "risk_coverage",
    "fitting",
    "figure_3b",
    "sizes",
    "error_sources",
    "reliability",
    "dose_response",
)

# What a fine-tuned model's card reports: (dataset config, which test questions, ((metric type, key in the last
# per-epoch record of the condition), ...)). The test people were never fine-tuned on.
CARD_FIGURES = (
    (
        "known",
        "held-out test people it read about in pre-training",
        (
            ("accuracy", "test_known_accuracy"),
            ("hallucination_rate", "test_known_hallucination_rate"),
            ("abstention_rate", "test_known_abstention_rate"),
        ),
    ),
    ("highly_known", "held-out test people it read the most about", (("accuracy", "test_highly_known_accuracy"),)),
    (
        "unknown",
        "held-out test people it never read about",
        (
            ("hallucination_rate", "test_unknown_hallucination_rate"),
            ("abstention_rate", "test_unknown_abstention_rate"),
        ),
    ),
)
# The pre-trained model's card: (dataset config, split, what, ((metric type, key in pretrain/metrics.json), ...)).
PRETRAINED_FIGURES = (
    ("biographies", "validation", "held-out biographies", (("perplexity", "eval_perplexity"),)),
    (
        "biographies",
        "generated",
        "the biographies it writes of known people, claim by claim",
        (
            ("claim_precision", "biography_claim_precision"),
            ("contradiction_rate", "biography_contradiction_rate"),
            ("coverage", "biography_coverage"),
        ),
    ),
)

# (config, split) of a result above -> (config, split) of the world as `lstm-lab-push-world` publishes it: the test
# people's questions are in `dev_test`; the held-out biographies are a slice of `biographies`' `pretrain`; the
# biographies a model writes are scored against `knowledge_base`.
PUSHED_SPLITS = {
    ("known", "test"): ("dev_test", "test_known"),
    ("highly_known", "test"): ("dev_test", "test_known"),
    ("unknown", "test"): ("dev_test", "test_unknown"),
    ("all", "test"): ("dev_test", "test_known+test_unknown"),
    ("biographies", "validation"): ("biographies", "pretrain"),
    ("biographies", "generated"): ("knowledge_base", "people"),
}

ADAPTER_CARD = """---
{{ card_data }}
---

# {{ title }}: LoRA adapter

A PEFT LoRA adapter for [{{ base_model }}](https://huggingface.co/{{ base_model }}) (the model in this repository's
root folder): {{ description }}.

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("{{ base_model }}", trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained("{{ base_model }}", trust_remote_code=True)
model = PeftModel.from_pretrained(base, "{{ base_model }}", subfolder="adapter").merge_and_unload()
```

## Results (held-out test people, last epoch)

{{ results_table }}

`base_model.json` holds the SHA-256 of the base weights it was trained on. The root folder's card describes the
model, the synthetic world and the study.
"""


@dataclass
class StudyModel:
    """A saved model of a study and what the study says about it.

    Attributes:
        study_dir: the study's output folder (it holds `results.json`).
        results: the content of `results.json`.
        condition: the fine-tuning condition the model came from, as `results.json` records it, or None for the
            pre-trained model.
    """

    study_dir: Path
    results: dict
    condition: dict | None

    @property
    def world_config(self) -> WorldConfig:
        knowledge_base = self.study_dir / "pretrain" / "world" / "knowledge_base.json"
        return WorldConfig(**json.loads(knowledge_base.read_text(encoding="utf-8"))["config"])

    @property
    def description(self) -> str:
        """What the model is, in a phrase."""
        if self.condition is None:
            return "pre-trained on the biographies of the synthetic world, not fine-tuned"
        c = self.condition
        how = "with LoRA" if c["method"] == "lora" else "in full"
        mitigation = {
            "none": "",
            "filter_unknown": ", without the questions the probe found unknown to the pre-trained model",
            "abstention": ', taught to answer "I don\'t know" to the questions the probe found unknown',
            "kl_penalty": ", with a KL penalty toward the pre-trained model's next-token distributions",
            "replay": ", with pre-training biographies replayed among the questions",
        }[c["mitigation"]]
        return (
            f"pre-trained on the biographies of the synthetic world, then fine-tuned {how} on "
            f"{c['num_examples']} questions, {c['fraction_unknown']:.0%} of them about people it never read about"
            f"{mitigation} (study condition `{c['name']}`, training seed {c['training_seed']})"
        )


def architecture_name(model_type: str) -> str:
    """How a card names a model type: "LSTM" for ours, a transformers type as it is (e.g. "gpt2")."""
    return "LSTM" if model_type == LSTMConfig.model_type else model_type


def find_study_model(study_dir: str | Path, folder: str | Path) -> StudyModel:
    """The model of `study_dir` saved in `folder`: `pretrain/model`, `best/model` (or `best/adapter`), or a
    run's `conditions/<name>/seed_<S>/model` (or `adapter`); its `condition` holds that run's own figures.

    Raises:
        FileNotFoundError: if `study_dir` holds no `results.json`.
        ValueError: if `folder` is none of the study's models.
    """
    study_dir = Path(study_dir)
    results_file = study_dir / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"{study_dir} holds no results.json: not a study folder (scripts/study.py writes one)")
    results = json.loads(results_file.read_text(encoding="utf-8"))
    models: dict[Path, dict | None] = {(study_dir / "pretrain" / "model").resolve(): None}
    by_run = {}
    for condition in results["conditions"]:
        for run in condition.get("runs", []):
            if run.get("saved") and condition["mitigation"] != "early_stopping":
                # The figures of the model itself: its own run's, not the mean over the condition's seeds.
                view = {**condition, **run, "name": condition["name"]}
                models[(study_dir / run["saved"]).resolve()] = by_run[(condition["name"], run["training_seed"])] = view
    best = results.get("best")
    for sub in best["folders"] if best else ():
        models[(study_dir / "best" / sub).resolve()] = by_run[(best["name"], best["training_seed"])]
    target = Path(folder).resolve()
    if target not in models:
        raise ValueError(
            f"{folder} is none of the saved models or adapters of the study in {study_dir}: a model is its "
            "pretrain/model, best/model or conditions/<name>/seed_<S>/model; an adapter a LoRA run's "
            "conditions/<name>/seed_<S>/adapter (or best/adapter)"
        )
    return StudyModel(study_dir, results, models[target])


def eval_results(model: StudyModel, dataset_repo_id: str | None = None) -> list[EvalResult]:
    """The study's figures for `model` as `EvalResult`s (figures the study could not compute, such as an AUROC with
    no right answer, are left out). A fine-tuned model: its condition's last epoch on the held-out test people, and
    the AUROC of its confidence as a hallucination detector; the pre-trained model: the perplexity of held-out
    biographies and the factuality of the biographies it writes.

    Each result's `dataset_type` is `dataset_repo_id`, the Hub dataset the study's world was published as, if given,
    with that dataset's configs and splits (`PUSHED_SPLITS`); else `WORLD_DATASET_TYPE`."""
    world = model.world_config
    dataset_name = f"Synthetic world ({world.num_people} people, seed {world.seed})"

    def result(config: str, split: str, what: str, metric: str, value: float) -> EvalResult:
        if dataset_repo_id:  # the pushed dataset's own config and split (`dataset_folder`) that hold those questions
            config, split = PUSHED_SPLITS[config, split]
        return EvalResult(
            task_type=TASK_TYPE,
            task_name=PRETRAINING_TASK_NAME if model.condition is None else TASK_NAME,
            dataset_type=dataset_repo_id or WORLD_DATASET_TYPE,
            dataset_name=f"{dataset_name}: {what}",
            dataset_config=config,
            dataset_split=split,
            metric_type=metric,
            metric_name=f"{metric.replace('_', ' ')} on {what}",
            metric_value=value,
        )

    if model.condition is None:
        metrics = json.loads((model.study_dir / "pretrain" / "metrics.json").read_text(encoding="utf-8"))
        return [
            result(config, split, what, metric, metrics[key])
            for config, split, what, figures in PRETRAINED_FIGURES
            for metric, key in figures
            if metrics.get(key) is not None
        ]
    record = model.condition["per_epoch"][-1]
    results = [
        result(config, "test", what, metric, record[key])
        for config, what, figures in CARD_FIGURES
        for metric, key in figures
        if record.get(key) is not None
    ]
    detector = model.condition.get("detector") or {}
    auroc = (detector.get("auroc") or {}).get("confidence")
    if auroc is not None:
        what = "held-out test people, known and unknown: confidence as a detector of wrong answers"
        results.append(result("all", "test", what, "roc_auc", auroc))
    return results


def results_table(results: list[EvalResult]) -> str:
    """A Markdown table of `results`, one row per figure."""
    rows = ["| questions | split | metric | value |", "|---|---|---|---|"]
    for r in results:
        what = r.dataset_name.split(": ", 1)[-1]
        rows.append(f"| {what} | {r.dataset_split} | {r.metric_type} | {r.metric_value:.3f} |")
    return "\n".join(rows)


def count_parameters(model_dir: str | Path) -> int:
    """Number of parameters stored in `model_dir/model.safetensors` (a tied matrix counts once, as it is stored)."""
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="pt") as weights:
        total = 0
        for name in weights.keys():
            shape = weights.get_slice(name).get_shape()
            count = 1
            for size in shape:
                count *= size
            total += count
    return total


def example_person(study_dir: Path) -> str:
    """The name of a held-out highly known person of the study's world (the first), for examples."""
    people = load_world(study_dir / "pretrain" / "world").people
    heldout = [p for p in people if p.role == "heldout"]
    return next((p.name for p in heldout if p.knowledge == "highly_known"), (heldout or people)[0].name)


def _world_snippet(world: WorldConfig) -> str:
    defaults = WorldConfig()
    changed = {
        f.name: getattr(world, f.name)
        for f in dataclasses.fields(world)
        if getattr(world, f.name) != getattr(defaults, f.name)
    }
    return ", ".join(f"{name}={value!r}" for name, value in changed.items())


def build_model_card(
    model: StudyModel,
    model_dir: str | Path,
    repo_id: str,
    template_path: str | Path,
    base_model: str | None = None,
    adapter: StudyModel | None = None,
    dataset_repo_id: str | None = None,
) -> ModelCard:
    """The card of the model in `model_dir` (a model of the study `model.study_dir`), to be published as `repo_id`.

    Args:
        model: what the study says about the model (`find_study_model`).
        model_dir: its saved folder (for its config and parameter count).
        repo_id: the Hub repository it goes to, "namespace/name".
        template_path: the card template, a Markdown file with Jinja fields (the repository's `hub_card.md`).
        base_model: the Hub id of the model it was fine-tuned from, for the card's `base_model`.
        adapter: the study's record of a LoRA adapter published beside the model in `adapter/`, if any.
        dataset_repo_id: the Hub dataset the study's world was published as (`scripts/push_world.py`), if any: the
            card's `datasets:` names it and every result's `dataset_type` is it. Without it the card has no
            `datasets:`.

    Returns:
        The card; `card.data` holds the metadata, and its `model-index` the figures of `eval_results(model)`.
    """
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    results = eval_results(model, dataset_repo_id)
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        license="apache-2.0",
        tags=[config["model_type"], *TAGS],
        datasets=[dataset_repo_id] if dataset_repo_id else None,
        base_model=base_model,
        model_name=repo_id.split("/")[-1],
        eval_results=results or None,
        metrics=sorted({r.metric_type for r in results}) or None,
    )
    study_config = model.results["config"]
    return ModelCard.from_template(
        data,
        template_path=str(template_path),
        repo_id=repo_id,
        title=repo_id.split("/")[-1],
        description=model.description,
        architecture=config,
        architecture_name=architecture_name(config["model_type"]),
        num_parameters=f"{count_parameters(model_dir) / 1e6:.2f}M",
        world=model.world_config,
        example_name=example_person(model.study_dir),
        world_snippet=_world_snippet(model.world_config),
        study_settings=", ".join(f"`{k}`={study_config[k]}" for k in sorted(study_config) if k not in LOCAL_SETTINGS),
        fine_tuned=model.condition is not None,
        results_table=results_table(results),
        findings=finding_lines(model.results.get("findings", [])),
        plots=[name for name in PLOTS if (model.study_dir / f"{name}.png").is_file()],
        adapter=adapter.description if adapter else None,
        best=model.results.get("best"),
    )


def build_adapter_card(adapter: StudyModel, repo_id: str, dataset_repo_id: str | None = None) -> ModelCard:
    """The card of a LoRA adapter published in `adapter/` of `repo_id`, on the model in that repository's root
    (`dataset_repo_id` as for `build_model_card`)."""
    results = eval_results(adapter, dataset_repo_id)
    data = ModelCardData(
        library_name="peft",
        pipeline_tag="text-generation",
        license="apache-2.0",
        tags=["lora", "peft", *TAGS],
        datasets=[dataset_repo_id] if dataset_repo_id else None,
        base_model=repo_id,
        model_name=f"{repo_id.split('/')[-1]}-adapter",
        eval_results=results or None,
    )
    return ModelCard.from_template(
        data,
        template_str=ADAPTER_CARD,
        title=f"{repo_id.split('/')[-1]}-adapter",
        description=adapter.description,
        results_table=results_table(results),
    )


__all__ = [
    "CARD_FIGURES",
    "architecture_name",
    "PRETRAINED_FIGURES",
    "WORLD_DATASET_TYPE",
    "StudyModel",
    "build_adapter_card",
    "build_model_card",
    "count_parameters",
    "eval_results",
    "find_study_model",
    "results_table",
]
