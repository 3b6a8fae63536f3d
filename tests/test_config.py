import pytest
from transformers import AutoConfig

from modeling import LSTMConfig


def test_defaults_are_the_seed_sizes():
    config = LSTMConfig()
    assert (config.embedding_dim, config.hidden_size, config.num_layers) == (128, 256, 3)
    assert config.num_hidden_layers == 3


@pytest.mark.parametrize(
    "field, value",
    [
        ("vocab_size", 0),
        ("embedding_dim", -8),
        ("hidden_size", 0),
        ("num_layers", 2.5),
        ("num_layers", True),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("dropout", "0.1"),
        ("initializer_range", 0.0),
        ("initializer_range", True),
        ("tie_word_embeddings", "yes"),
        ("pad_token_id", 100),
        ("pad_token_id", True),
        ("eos_token_id", -1),
        ("eos_token_id", [1, 100]),
    ],
    ids=lambda v: str(v),
)
def test_invalid_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"LSTMConfig.{field} "):
        LSTMConfig(vocab_size=100, **{field: value}) if field != "vocab_size" else LSTMConfig(vocab_size=value)


@pytest.mark.parametrize("tie, hidden, expected", [(True, 64, 32), (True, 32, 32), (False, 64, 64)])
def test_output_size_follows_tying(tie, hidden, expected):
    assert LSTMConfig(embedding_dim=32, hidden_size=hidden, tie_word_embeddings=tie).output_size == expected


def test_round_trips_through_auto_config(tmp_path):
    config = LSTMConfig(vocab_size=100, embedding_dim=16, hidden_size=24, num_layers=2, dropout=0.1, pad_token_id=0)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is LSTMConfig
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_several_eos_ids_are_allowed():
    assert LSTMConfig(vocab_size=100, eos_token_id=[1, 2]).eos_token_id == [1, 2]
