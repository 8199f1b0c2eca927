"""Tiny tokenizers and causal LMs built in-process, for tests and the offline quickstart.

Nothing here downloads anything: the tokenizer is trained on the given texts with
``tokenizers`` and the model is built from a config with random weights.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}
ROLE_TOKENS = ["<system>", "<user>", "<assistant>", "<tool>", "<developer>", "<eot>"]
# One token per role marker; every turn ends with <eot>, and the assistant's turn also with EOS.
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} <eot> "
    "{% if m['role'] == 'assistant' %}<eos> {% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)
ARCHITECTURES = ("llama", "gpt2", "qwen2")


def build_word_tokenizer(texts: Iterable[str], *, add_bos: bool = False) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer whose vocabulary is every word of ``texts``.

    It has pad/bos/eos/unk tokens and a small chat template. With ``add_bos`` the tokenizer
    prepends BOS (like Llama's); otherwise it adds nothing (like GPT-2's).
    """
    words = sorted({w for t in texts for w in t.split()})
    specials = list(SPECIAL_TOKENS.values()) + ROLE_TOKENS
    vocab = {tok: i for i, tok in enumerate(specials + [w for w in words if w not in specials])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_bos:
        from tokenizers import processors

        bos = SPECIAL_TOKENS["bos_token"]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
        )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    arch: str = "llama",
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_positions: int = 256,
    seed: int = 0,
) -> PreTrainedModel:
    """A randomly initialised causal LM of architecture ``arch`` (llama, gpt2 or qwen2)."""
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if arch in ("llama", "qwen2"):
        config_class = LlamaConfig if arch == "llama" else Qwen2Config
        config = config_class(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=max_positions,
            **common,
        )
    elif arch == "gpt2":
        config = GPT2Config(
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
    else:
        raise ValueError(f"unknown architecture '{arch}', expected one of {ARCHITECTURES}")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)
