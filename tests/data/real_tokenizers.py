"""Small tokenizers of the kinds real models ship, trained in-process on a few sentences.

* :func:`byte_level_bpe`: GPT-2 / Llama 3 / Qwen style byte-level BPE, ChatML specials;
  its post-processor adds nothing, BOS, or BOS and EOS to every encoding.
* :func:`metaspace_llama`: ``transformers.LlamaTokenizer`` (Metaspace pre-tokenizer, byte
  fallback), ``legacy=True`` or ``False``.
* :func:`legacy_sentencepiece`: the ``tokenizer.json`` of Llama 2 and Mistral v0.1 (a normalizer
  that prepends ``▁`` and replaces spaces, no pre-tokenizer): encoding a text that starts with a
  space gives a lone ``▁``.
"""

from __future__ import annotations

import functools
import json

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

# Words of the test strings in several contexts (not the test pairs themselves), so that the
# vocabulary has sub-word tokens as a real one does rather than one token per test string.
CORPUS = [
    "Human: hello there Assistant: hi, how can I help you today?",
    "What is two plus two? The answer is four.",
    "the cat sat on the mat\n\nthe dog sat on the log",
    "Vote: yes. Vote: no. Flags: 🇫🇷 🇩🇪 🇫🇮 🇺🇸",
    "Family: 👨 👩 👧 👦 Thumbs: 👍 🏽 🏿",
    "नमस्ते दुनिया . नमस्कार दोस्त . नम स्ते",
    "สวัสดี ครับ ค่ะ",
    "我 喜欢 猫 。 狗 。",
    "café crème cafe naïve",
    "안녕 하세요 히 가세요",
]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The DeepSeek-R1 family: the generation prompt opens a thought, an answered turn does not.
R1_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% else %}<｜Assistant｜>{{ m['content'] }}<｜end▁of▁sentence｜>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)
BYTES = [f"<0x{i:02X}>" for i in range(256)]


def byte_level_bpe(adds: str = "nothing", *, eos: str = "<|im_end|>") -> PreTrainedTokenizerFast:
    """Byte-level BPE with BOS ``<s>``, EOS ``eos`` and the ChatML template; ``adds`` is what its
    post-processor puts around every encoding: ``"nothing"``, ``"bos"`` or ``"bos+eos"``."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "<pad>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS * 4, trainer)
    ids = {t: backend.token_to_id(t) for t in ("<s>", eos)}
    if adds == "bos":
        backend.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", ids["<s>"])]
        )
    elif adds == "bos+eos":
        backend.post_processor = processors.TemplateProcessing(
            single=f"<s> $A {eos}", pair=f"<s> $A $B {eos}", special_tokens=list(ids.items())
        )
    elif adds != "nothing":
        raise ValueError(adds)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token=eos, pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]})
    tok.chat_template = CHATML
    return tok


def r1_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with DeepSeek-R1's special tokens and a template of its family."""
    tok = byte_level_bpe(eos="<|im_end|>")
    tok.add_special_tokens(
        {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
        | {"additional_special_tokens": ["<｜User｜>", "<｜Assistant｜>"]}
    )
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = R1_TEMPLATE
    return tok


@functools.cache
def _sentencepiece_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A SentencePiece-style BPE vocabulary (``▁`` word starts, byte-fallback tokens)."""
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"] + BYTES)
    backend.train_from_iterator(CORPUS * 4, trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def metaspace_llama(legacy: bool) -> PreTrainedTokenizerFast:
    vocab, merges = _sentencepiece_vocab()
    return LlamaTokenizer(vocab=dict(vocab), merges=list(merges), legacy=legacy, add_bos_token=True)


def legacy_sentencepiece() -> PreTrainedTokenizerFast:
    vocab, merges = _sentencepiece_vocab()
    backend = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
