"""Byte-level BPE tokenizer of the LSTM language model.

Byte-level BPE (as in GPT-2) maps any unicode text to bytes first, so nothing is ever unknown and
`decode(encode(text)) == text` for every string.
"""

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import TokenizersBackend

PAD_TOKEN = "<|pad|>"
# As in GPT-2, one token ends a document and starts the next, and stands for the (never needed) unknown token.
EOS_TOKEN = "<|endoftext|>"
# The two special tokens and the 256 bytes every text is spelt in.
MIN_VOCAB_SIZE = 2 + len(pre_tokenizers.ByteLevel.alphabet())


class LSTMTokenizer(TokenizersBackend):
    """
    Byte-level BPE tokenizer (a `PreTrainedTokenizerFast`) built with [`train_tokenizer`]. `<|endoftext|>` is the
    bos, eos and unk token, `<|pad|>` the pad token; nothing is added to the text automatically, so
    `decode(encode(text)) == text`.

    Example:

    ```python
    >>> from modeling import train_tokenizer

    >>> tokenizer = train_tokenizer(["Ada Lovelace was born in London."] * 10, vocab_size=300)
    >>> tokenizer.decode(tokenizer("Ada was born in Paris.")["input_ids"])
    'Ada was born in Paris.'
    ```
    """

    # No __init__ of its own: transformers then builds the backend straight from tokenizer.json, merges included.
    model_input_names = ["input_ids", "attention_mask"]


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> LSTMTokenizer:
    """Train a byte-level BPE tokenizer of at most `vocab_size` tokens (special tokens and the 256 bytes included)
    on `texts`, merging only pairs seen at least `min_frequency` times.

    Raises:
        ValueError: if `vocab_size` is below 258, the two special tokens plus the 256 bytes.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} (2 special tokens + 256 bytes), got {vocab_size}"
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[PAD_TOKEN, EOS_TOKEN],  # ids 0 and 1
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return LSTMTokenizer(
        tokenizer_object=backend,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,  # decoding must give back the exact text, spaces included
    )


__all__ = ["MIN_VOCAB_SIZE", "LSTMTokenizer", "train_tokenizer"]
