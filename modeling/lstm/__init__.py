"""The LSTM language model: its config, model classes and tokenizer, the three files `save_pretrained` ships beside
the weights as Hub remote code (so they import only each other, transformers, torch and tokenizers).

Importing this package registers the model with the Auto classes, so `AutoConfig`, `AutoModel`,
`AutoModelForCausalLM` and `AutoTokenizer` build it from a config or a saved folder.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from .configuration_lstm import LSTMConfig
from .modeling_lstm import LSTMCache, LSTMForCausalLM, LSTMModel, LSTMPreTrainedModel
from .tokenization_lstm import LSTMTokenizer, train_tokenizer

AutoConfig.register(LSTMConfig.model_type, LSTMConfig, exist_ok=True)
AutoModel.register(LSTMConfig, LSTMModel, exist_ok=True)
AutoModelForCausalLM.register(LSTMConfig, LSTMForCausalLM, exist_ok=True)
AutoTokenizer.register(LSTMConfig, fast_tokenizer_class=LSTMTokenizer, exist_ok=True)

# save_pretrained copies the three model files next to the weights and writes `auto_map` (named by file, so the same
# names as before this folder existed), so the folder loads anywhere with trust_remote_code=True, without this package.
LSTMConfig.register_for_auto_class()
LSTMModel.register_for_auto_class("AutoModel")
LSTMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
LSTMTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = [
    "LSTMCache",
    "LSTMConfig",
    "LSTMForCausalLM",
    "LSTMModel",
    "LSTMPreTrainedModel",
    "LSTMTokenizer",
    "train_tokenizer",
]
