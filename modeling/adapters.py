"""LoRA adapters that know their base model: an adapter folder records a fingerprint of the weights it was trained
on, and loading it onto any other model is an error rather than a silently wrong model.

PEFT loads an adapter onto any model whose parameter names and shapes match, so an adapter from one pre-training run
applies without a word to another run's model of the same size. `base_model.json` (written next to PEFT's files)
holds the SHA-256 of the base weights; adapters without it (made elsewhere) are checked by PEFT's shapes only.
"""

import hashlib
import json
import os
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import SAFETENSORS_WEIGHTS_NAME, get_peft_model_state_dict
from safetensors import safe_open
from transformers import PreTrainedModel

BASE_MODEL_FILE = "base_model.json"


def base_model_fingerprint(model: PreTrainedModel) -> str:
    """SHA-256 over the names, shapes, dtypes and values of every weight of `model` (a plain model, not a
    PeftModel: PEFT renames the parameters it wraps)."""
    if isinstance(model, PeftModel):
        raise TypeError("Fingerprint the base model before PEFT wraps it")
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def base_model_record(model: PreTrainedModel) -> dict[str, str]:
    """The content of `base_model.json` for an adapter trained on `model`."""
    return {"sha256": base_model_fingerprint(model), "name_or_path": str(model.name_or_path)}


def load_adapter(model: PreTrainedModel, adapter_dir: str | os.PathLike, is_trainable: bool = False) -> PeftModel:
    """`PeftModel.from_pretrained(model, adapter_dir)` after checking that the adapter was trained on `model`.

    Raises:
        FileNotFoundError: if `adapter_dir` has no `adapter_config.json`.
        ValueError: if `base_model.json` records other base weights, or the adapter's weights do not fit `model`
            (other shapes, or weights for modules it lacks); the message names both.
    """
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} is not a saved PEFT adapter: it has no adapter_config.json")
    name = model.name_or_path or "the given model"
    record_file = adapter_dir / BASE_MODEL_FILE
    if record_file.is_file():
        record = json.loads(record_file.read_text(encoding="utf-8"))
        if record["sha256"] != base_model_fingerprint(model):
            raise ValueError(
                f"The adapter in {adapter_dir} was trained on another base model ({record['name_or_path']}, weights "
                f"sha256 {record['sha256'][:12]}...) than {name}: load the model it was trained on"
            )
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=is_trainable)
    except RuntimeError as err:  # torch's "size mismatch" when the shapes differ
        raise ValueError(f"The adapter in {adapter_dir} does not fit {name}: {err}") from err
    # PEFT drops saved weights that have no place in the model (e.g. the adapters of a layer it lacks) silently.
    weights_file = adapter_dir / SAFETENSORS_WEIGHTS_NAME
    if weights_file.is_file():
        with safe_open(str(weights_file), framework="pt") as f:
            unused = set(f.keys()) - set(get_peft_model_state_dict(peft_model))
        if unused:
            raise ValueError(
                f"The adapter in {adapter_dir} does not fit {name}: {len(unused)} of its weights have no place in it, "
                f"e.g. {sorted(unused)[0]}"
            )
    return peft_model


__all__ = ["BASE_MODEL_FILE", "base_model_fingerprint", "base_model_record", "load_adapter"]
