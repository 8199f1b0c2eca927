"""The tiny model, tokenizer and data every script of this folder trains on: nothing from the Hub.

The task: reverse three letters (``"reverse : c a f ="`` -> ``" f a c"``). In your own script, replace
``tiny.model()`` / ``tiny.tokenizer()`` by ``AutoModelForCausalLM.from_pretrained(...)`` /
``AutoTokenizer.from_pretrained(...)`` and the datasets by ``load_dataset(...)``: the rest is unchanged.
"""

import random

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, PreTrainedTokenizerFast

LETTERS = "a b c d e f".split()
SPECIALS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def tokenizer() -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer (built with ``tokenizers``) over the task's words."""
    words = list(SPECIALS.values()) + ["reverse", ":", "="] + LETTERS
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIALS)


def model(tok: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised 2-layer Llama of hidden size 32, the same for a given ``seed``."""
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def reward_model(tok: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForSequenceClassification:
    """:func:`model`'s architecture with a one-output score head, the same for a given ``seed``."""
    config = model(tok, seed).config
    config.num_labels = 1
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(config)


def _letters(rng: random.Random) -> list[str]:
    return rng.sample(LETTERS, 3)


def demonstrations(n: int = 16, seed: int = 0) -> Dataset:
    """Prompt/completion rows (TRL's SFT format): the correct reversal."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        s = _letters(rng)
        rows.append({"prompt": "reverse : " + " ".join(s) + " =", "completion": " " + " ".join(reversed(s))})
    return Dataset.from_list(rows)


def preferences(n: int = 16, seed: int = 1) -> Dataset:
    """Prompt/chosen/rejected rows (TRL's DPO and reward format): the reversal over the copy."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        s = _letters(rng)
        rows.append(
            {
                "prompt": "reverse : " + " ".join(s) + " =",
                "chosen": " " + " ".join(reversed(s)),
                "rejected": " " + " ".join(s),
            }
        )
    return Dataset.from_list(rows)


def prompts(n: int = 16, seed: int = 2) -> Dataset:
    """Prompt-only rows (TRL's RLOO/GRPO format)."""
    rng = random.Random(seed)
    return Dataset.from_list([{"prompt": "reverse : " + " ".join(_letters(rng)) + " ="} for _ in range(n)])


def output_dir(default: str) -> str:
    """``--output_dir PATH`` from the command line, else ``default``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", default=default)
    return parser.parse_args().output_dir
