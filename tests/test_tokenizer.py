"""Byte-level BPE tokenizer: exact round trips, special tokens, training limits."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeling import LSTMTokenizer, train_tokenizer


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_unicode_text_round_trips(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id not in ids or "<|endoftext|>" in text  # byte-level: nothing is unknown


@pytest.mark.parametrize(
    "text", ["", " ", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "émoji 🎉 and 日本語", "a ,b . c"]
)
def test_edge_cases_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_special_tokens_and_no_automatic_additions(tokenizer):
    assert isinstance(tokenizer, LSTMTokenizer)
    assert (tokenizer.pad_token, tokenizer.eos_token) == ("<|pad|>", "<|endoftext|>")
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.unk_token_id == 1
    assert tokenizer.pad_token_id == 0
    ids = tokenizer("Ada Lovelace")["input_ids"]
    assert 0 not in ids and 1 not in ids


def test_training_merges_frequent_words(tokenizer):
    assert len(tokenizer("Ada Lovelace was born")["input_ids"]) <= 5
    assert 258 < len(tokenizer) <= 320


def test_vocab_size_below_the_byte_alphabet_is_refused():
    with pytest.raises(ValueError, match="vocab_size must be at least 258"):
        train_tokenizer(["abc"], vocab_size=100)
