import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_TELEMETRY", "0")

import pytest  # noqa: E402

from aihf.tasks.tiny import build_word_tokenizer  # noqa: E402
from tests.device import CPU_ONLY, DEVICE  # noqa: E402


def pytest_configure(config):
    if DEVICE == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise pytest.UsageError("AIHF_TEST_DEVICE=cuda, but torch sees no CUDA GPU")


def pytest_collection_modifyitems(config, items):
    """On a GPU (AIHF_TEST_DEVICE=cuda), skip the tests that are CPU-only by nature, saying why."""
    if DEVICE == "cpu":
        return
    root = os.path.dirname(__file__)
    for item in items:
        where = os.path.relpath(str(item.path), root).replace(os.sep, "/")
        reason = next((why for path, why in CPU_ONLY.items() if where.startswith(path)), None)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"CPU-only by nature: {reason}"))

WORDS = "hello world how are you fine bad good yes no maybe the a cat dog sat on mat".split()


@pytest.fixture
def tokenizer():
    """Word-level tokenizer over WORDS, no BOS (like GPT-2), with a chat template."""
    return build_word_tokenizer(WORDS)


@pytest.fixture
def bos_tokenizer():
    """The same vocabulary, but prepending BOS (like Llama)."""
    return build_word_tokenizer(WORDS, add_bos=True)
