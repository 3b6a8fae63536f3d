"""Shared fixtures: a tiny tokenizer and tiny models, built through the Auto classes so registration is tested too."""

import os

# Nothing in the tests may reach the network: the Hub, datasets and metrics all load from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

import modeling
from modeling import LSTMTokenizer, train_tokenizer

TINY_SIZES = dict(embedding_dim=16, hidden_size=32, num_layers=2)

CORPUS = [
    "Ada Lovelace was born on 10 December 1815 in London.",
    "Ada Lovelace studied mathematics with Augustus De Morgan.",
    "Alan Turing was born in Maida Vale and studied at King's College.",
    "Grace Hopper worked at Harvard on the Mark I computer.",
    "Question: Where was Ada Lovelace born?\nAnswer: London",
] * 20


@pytest.fixture(scope="session")
def tokenizer() -> LSTMTokenizer:
    return train_tokenizer(CORPUS, vocab_size=320)


def tiny_model(tokenizer: LSTMTokenizer, seed: int = 0, **overrides) -> modeling.LSTMForCausalLM:
    config = AutoConfig.for_model(
        modeling.LSTMConfig.model_type,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **{**TINY_SIZES, **overrides},
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture
def model(tokenizer: LSTMTokenizer) -> modeling.LSTMForCausalLM:
    return tiny_model(tokenizer)
