import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_TELEMETRY", "0")

import pytest  # noqa: E402

from aihf.tasks.tiny import build_word_tokenizer  # noqa: E402

WORDS = "hello world how are you fine bad good yes no maybe the a cat dog sat on mat".split()


@pytest.fixture
def tokenizer():
    """Word-level tokenizer over WORDS, no BOS (like GPT-2), with a chat template."""
    return build_word_tokenizer(WORDS)


@pytest.fixture
def bos_tokenizer():
    """The same vocabulary, but prepending BOS (like Llama)."""
    return build_word_tokenizer(WORDS, add_bos=True)
