"""What the lab needs to know about an architecture: our LSTM, or any causal LM that transformers builds from scratch
(e.g. `gpt2`). Everything else reaches a model only through the Auto classes, `generate` and PEFT.

- `build_config`: a new model's config from the run's sizes, through `AutoConfig.for_model` and the names every
  config answers to (`attribute_map` aliases, e.g. gpt2's `hidden_size` -> `n_embd`).
- `default_lora_target_modules`, `default_lora_target_parameters`: what LoRA adapts when the user names nothing.
- `check_fits_positions`: a transformer reads at most `max_position_embeddings` tokens; our LSTM has no such limit.
"""

import dataclasses

from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, PreTrainedConfig

from ..lstm.configuration_lstm import LSTMConfig

# "lstm" is the short name runs use; the registered model type says whose LSTM it is.
LSTM_MODEL_TYPES = ("lstm", LSTMConfig.model_type)

# The LSTM's matrices that LoRA adapts by default: every layer is one nn.LSTM whose input-to-hidden and
# hidden-to-hidden matrices are named like this, and PEFT finds them in all layers (`target_parameters`).
LSTM_LORA_TARGET_PARAMETERS = ("weight_ih_l0", "weight_hh_l0")

# The attention and MLP projections of a transformer, which LoRA adapts by default (Hu et al., 2021 adapted the
# attention only; QLoRA, Dettmers et al., 2023, found every projection needed to match full fine-tuning). PEFT's own
# table names only gpt2's fused query/key/value projection `c_attn`; `c_proj` (attention output and MLP output) and
# `c_fc` (MLP input) are the rest. Other types fall back to PEFT's table.
LORA_TARGET_MODULES = {"gpt2": ("c_attn", "c_proj", "c_fc")}


def is_lstm(model_type: str) -> bool:
    """Whether `model_type` names our LSTM (the short "lstm" or its registered model type)."""
    return model_type in LSTM_MODEL_TYPES


def build_config(
    model_type: str,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_attention_heads: int,
    max_position_embeddings: int,
    dropout: float,
    **token_ids: int | None,
) -> PreTrainedConfig:
    """The config of a new transformers causal LM of type `model_type`, sized through the generic names: `hidden_size`,
    `num_hidden_layers`, `num_attention_heads` and `max_position_embeddings` (a config answers to them directly or
    through its `attribute_map`; one the architecture does not have is left out). `dropout` goes to every dropout
    probability of the config (gpt2: `embd_pdrop`, `resid_pdrop`, `attn_pdrop`). `token_ids`: `pad_token_id`,
    `bos_token_id`, `eos_token_id`.

    Raises:
        ValueError: if transformers knows no `model_type`, or knows it but not as a causal LM, or `hidden_size` is not
            divisible by `num_attention_heads` (of an architecture that has heads).
    """
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"model_type {model_type!r} is neither 'lstm' nor a model type transformers knows (e.g. 'gpt2', 'llama')"
        )
    config_class = CONFIG_MAPPING[model_type]
    if config_class not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ValueError(f"model_type {model_type!r} is not a causal language model (AutoModelForCausalLM has none)")
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    sizes = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
    )
    known = {name: value for name, value in sizes.items() if name in config_class.attribute_map or name in defaults}
    if "num_attention_heads" in known and hidden_size % num_attention_heads:
        raise ValueError(
            f"hidden_size {hidden_size} must be divisible by num_attention_heads {num_attention_heads}: each head "
            "reads an equal slice of the hidden state"
        )
    dropouts = {
        name: dropout
        for name, default in defaults.items()
        if ("dropout" in name or name.endswith("pdrop")) and isinstance(default, float)
    }
    return AutoConfig.for_model(model_type, vocab_size=vocab_size, **known, **dropouts, **token_ids)


def default_lora_target_modules(model_type: str) -> list[str]:
    """The modules that LoRA adapts in a model of `model_type` when the user names none: none of the LSTM (its
    matrices are parameters, see `default_lora_target_parameters`), a transformer's attention and MLP projections.

    Raises:
        ValueError: for a transformer type with no default (neither in `LORA_TARGET_MODULES` nor in PEFT's table).
    """
    if is_lstm(model_type):
        return []
    modules = LORA_TARGET_MODULES.get(model_type) or TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    if modules is None:
        raise ValueError(f"No default LoRA targets for model type {model_type!r}: name them with lora_target_modules")
    return list(modules)


def default_lora_target_parameters(model_type: str) -> list[str]:
    """The parameters that LoRA adapts in a model of `model_type` when the user names none: the LSTM's matrices,
    none of a transformer (its projections are modules)."""
    return list(LSTM_LORA_TARGET_PARAMETERS) if is_lstm(model_type) else []


def max_positions(config: PreTrainedConfig) -> int | None:
    """The longest sequence a model of `config` can read (`max_position_embeddings`), None when unbounded (the LSTM,
    or an architecture without position embeddings)."""
    return getattr(config, "max_position_embeddings", None)


def check_fits_positions(config: PreTrainedConfig, length: int, what: str) -> None:
    """Raise ValueError when sequences of `length` tokens (`what`, named in the message with the setting that makes
    it) are longer than a model of `config` can read: its position embeddings would be indexed out of range."""
    limit = max_positions(config)
    if limit is not None and length > limit:
        raise ValueError(
            f"{what} is {length} tokens, longer than the {limit} positions the {config.model_type} model can read "
            "(max_position_embeddings): shorten it, or pre-train a model with more positions"
        )


__all__ = [
    "LORA_TARGET_MODULES",
    "LSTM_LORA_TARGET_PARAMETERS",
    "LSTM_MODEL_TYPES",
    "build_config",
    "check_fits_positions",
    "default_lora_target_modules",
    "default_lora_target_parameters",
    "is_lstm",
    "max_positions",
]
