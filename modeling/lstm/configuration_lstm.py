"""Configuration of the LSTM language model."""

from transformers import PreTrainedConfig


class LSTMConfig(PreTrainedConfig):
    r"""
    Configuration of an [`LSTMForCausalLM`]: token embedding, a stack of `torch.nn.LSTM` layers and a language-model
    head, like the classic LSTM language models (Zaremba et al., 2014; Merity et al., 2017).

    Args:
        vocab_size (`int`, *optional*, defaults to 260):
            Number of tokens the embedding and the head know. Must cover every id the tokenizer can produce.
        embedding_dim (`int`, *optional*, defaults to 128):
            Width of the token embeddings, the input of the first LSTM layer.
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the LSTM hidden and cell states.
        num_layers (`int`, *optional*, defaults to 3):
            Number of stacked LSTM layers.
        dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the embeddings, between LSTM layers and before the head. In [0, 1).
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Share the embedding matrix with the head (Press & Wolf, 2017). When `hidden_size != embedding_dim` the
            base model ends with a linear projection from `hidden_size` to `embedding_dim` so the shapes fit.
        initializer_range (`float`, *optional*, defaults to 0.1):
            Standard deviation of the normal init of the embeddings and linear layers. Larger than the transformers'
            usual 0.02, like the U(-0.1, 0.1) of classic LSTM language models: with 0.02 the tiny inputs left the
            LSTM stuck at unigram statistics for hundreds of steps. LSTM weights keep PyTorch's
            uniform(-1/sqrt(hidden_size), 1/sqrt(hidden_size)) init.
        use_cache (`bool`, *optional*, defaults to `True`):
            Return the recurrent state so `generate()` feeds one token per step after the prompt.

    Example:

    ```python
    >>> from modeling import LSTMConfig, LSTMForCausalLM

    >>> config = LSTMConfig(vocab_size=100, embedding_dim=32, hidden_size=64, num_layers=2)
    >>> model = LSTMForCausalLM(config)
    >>> config.output_size  # a projection maps 64 -> 32 so the head can share the embedding matrix
    32
    ```
    """

    model_type = "hallucination_lab_lstm"  # clashes with no model_type that ships with transformers
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {"num_hidden_layers": "num_layers"}  # the name generic transformers code asks for

    vocab_size: int = 260
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 3
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    initializer_range: float = 0.1
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LSTMConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"LSTMConfig.dropout must be a number in [0, 1), got {self.dropout!r}")
        range_ = self.initializer_range
        if isinstance(range_, bool) or not isinstance(range_, (int, float)) or not range_ > 0:
            raise ValueError(f"LSTMConfig.initializer_range must be a positive number, got {range_!r}")
        if not isinstance(self.tie_word_embeddings, bool):
            raise ValueError(f"LSTMConfig.tie_word_embeddings must be True or False, got {self.tie_word_embeddings!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            # generate() accepts several eos ids; every other special token is one id.
            ids = value if name == "eos_token_id" and isinstance(value, list) else [value]
            if value is not None and not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.vocab_size for i in ids
            ):
                raise ValueError(f"LSTMConfig.{name} must be None or an id in [0, {self.vocab_size}), got {value!r}")
        super().__post_init__(**kwargs)

    @property
    def output_size(self) -> int:
        """Width of the base model's `last_hidden_state`, which is exactly what the head consumes."""
        return self.embedding_dim if self.tie_word_embeddings else self.hidden_size


__all__ = ["LSTMConfig"]
