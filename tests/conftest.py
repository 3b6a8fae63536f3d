"""Fixtures: a tiny tokenizer and a tiny model. Helpers that tests import live in helpers.py."""

import os

# Nothing in the tests may reach the network: the Hub, datasets and metrics all load from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from intra-op threads, and on a small shared VM one starved core stalls every OpenMP
# barrier (seen: 1 ms LSTM steps taking 0.8 s with two threads). Subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path

import pytest
from helpers import CORPUS, tiny_args, tiny_model

import modeling
from modeling import LSTMTokenizer, train_tokenizer
from modeling.study import run_study


@pytest.fixture(scope="session")
def tokenizer() -> LSTMTokenizer:
    return train_tokenizer(CORPUS, vocab_size=320)


@pytest.fixture
def model(tokenizer: LSTMTokenizer) -> modeling.LSTMForCausalLM:
    return tiny_model(tokenizer)


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> Path:
    """The tiny study, run once for every test that reads a study (test_study, the publishing and demo tests). A test
    that changes it must leave it as it found it."""
    return run_study(tiny_args(tmp_path_factory.mktemp("study") / "run"))
