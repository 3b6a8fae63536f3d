"""An LSTM language model as a Hugging Face model, and a lab that measures the hallucination fine-tuning causes.

- `lstm/`: the model (config, model classes, tokenizer: the Hub remote code); importing the package registers it
  with the Auto classes.
- `training/`: pre-training and supervised fine-tuning with the Trainer and TRL.
- `factuality/`: the `evaluate` metric; `world.py`: the synthetic world; `scoring.py`: answering and scoring.
- `study/`: the study (the main job); `publishing/`: the model card, the push and the demo.
- Helpers: `checkpoints.py`, `adapters.py`, `files.py`, `run_config.py`, `run_folder.py`, `threads.py`,
  `timing.py`.
"""

from .lstm import LSTMCache, LSTMConfig, LSTMForCausalLM, LSTMModel, LSTMPreTrainedModel, LSTMTokenizer, train_tokenizer

# The same names as lstm/__init__'s: written out, because linters and IDEs read __all__ as text.
__all__ = [
    "LSTMCache",
    "LSTMConfig",
    "LSTMForCausalLM",
    "LSTMModel",
    "LSTMPreTrainedModel",
    "LSTMTokenizer",
    "train_tokenizer",
]
