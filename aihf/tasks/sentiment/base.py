"""The base model of the sentiment task: a small Llama pre-trained on Shakespeare's plays.

A byte-level BPE tokenizer is trained with ``tokenizers`` on the pre-training plays, then a
randomly initialised Llama is trained on random windows of the tokenised text with the
``transformers`` Trainer (next-token loss). A base built with the default
:class:`BaseModelConfig` ships with aihf (``aihf/tasks/sentiment/base_model``, float16
weights, a few MB) so that the benchmark needs no pre-training; ``build_base`` rebuilds it:

    python -m aihf.tasks.sentiment build-base --output_dir DIR      # about 15 min on one busy core

Other configurations are built once and cached under ``cache_dir()``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field

import torch

from .corpus import HELD_OUT_PLAYS, load_plays, split_corpus

SHIPPED_BASE = os.path.join(os.path.dirname(__file__), "base_model")
BUILD_INFO = "aihf_build.json"


def cache_dir() -> str:
    """aihf's cache folder: ``$AIHF_CACHE``, else ``~/.cache/aihf``."""
    return os.environ.get("AIHF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "aihf")


@dataclass
class BaseModelConfig:
    vocab_size: int = field(default=2048, metadata={"help": "BPE vocabulary size (incl. special tokens)."})
    hidden_size: int = field(default=128, metadata={"help": "Llama hidden size."})
    num_layers: int = field(default=4, metadata={"help": "Llama decoder layers."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads."})
    intermediate_size: int = field(default=512, metadata={"help": "MLP width."})
    context_length: int = field(default=128, metadata={"help": "Tokens per pre-training window."})
    train_tokens: int = field(default=4_000_000, metadata={"help": "Pre-training budget in tokens."})
    batch_size: int = field(default=32, metadata={"help": "Windows per optimizer step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (cosine decay)."})
    seed: int = field(default=0, metadata={"help": "Seed of tokenizer sampling, initialisation and windows."})

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def train_tokenizer(text: str, vocab_size: int):
    """A byte-level BPE tokenizer trained on ``text`` (no BOS is added: text is a stream)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(text.split("\n\n"), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


class _Windows(torch.utils.data.Dataset):
    """Random windows of ``context_length + 1`` tokens; item ``i`` is drawn from a seeded stream."""

    def __init__(self, ids: torch.Tensor, length: int, count: int, seed: int):
        self.ids, self.length, self.count, self.seed = ids, length, count, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        start = int(torch.randint(0, len(self.ids) - self.length, (1,), generator=g))
        window = self.ids[start : start + self.length]
        return {"input_ids": window, "labels": window}


def build_base(config: BaseModelConfig, output_dir: str, *, log=print) -> dict:
    """Train the tokenizer and pre-train the model; save both (float16 safetensors) to
    ``output_dir`` with ``aihf_build.json`` (config, tokens/s, held-out loss, wall time).
    Returns that build record."""
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    start = time.time()
    train_text, held_out = split_corpus(load_plays())
    tokenizer = train_tokenizer(train_text, config.vocab_size)
    ids = torch.tensor(tokenizer(train_text)["input_ids"], dtype=torch.long)
    held_ids = torch.tensor(tokenizer("\n".join(held_out.values()))["input_ids"], dtype=torch.long)
    log(f"corpus: {len(ids):,} pre-training tokens, {len(held_ids):,} held-out tokens")

    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(model_config)
    params = sum(p.numel() for p in model.parameters())
    steps = max(1, config.train_tokens // (config.batch_size * config.context_length))
    windows = _Windows(ids, config.context_length + 1, steps * config.batch_size, config.seed)
    args = TrainingArguments(
        output_dir=os.path.join(output_dir, ".pretrain"),
        per_device_train_batch_size=config.batch_size,
        max_steps=steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(100, steps // 10),
        weight_decay=0.1,
        logging_steps=max(1, steps // 20),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=config.seed,
        dataloader_pin_memory=False,
    )
    train_start = time.time()
    Trainer(model=model, args=args, train_dataset=windows).train()
    train_seconds = time.time() - train_start

    model.eval()
    with torch.no_grad():
        n = (len(held_ids) - 1) // config.context_length
        chunks = held_ids[: n * config.context_length].view(n, config.context_length)[:64]
        held_loss = float(model(input_ids=chunks, labels=chunks).loss)
    os.makedirs(output_dir, exist_ok=True)
    model.half().save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = {
        "config": asdict(config),
        "parameters": params,
        "pretraining_tokens": steps * config.batch_size * config.context_length,
        "corpus_tokens": len(ids),
        "train_seconds": round(train_seconds, 1),
        "tokens_per_second": round(steps * config.batch_size * config.context_length / train_seconds),
        "held_out_loss": round(held_loss, 4),
        "held_out_plays": list(HELD_OUT_PLAYS),
        "total_seconds": round(time.time() - start, 1),
        "command": "python -m aihf.tasks.sentiment build-base "
        + " ".join(f"--{k} {v}" for k, v in asdict(config).items()),
    }
    with open(os.path.join(output_dir, BUILD_INFO), "w") as f:
        json.dump(record, f, indent=2)
    import shutil

    shutil.rmtree(args.output_dir, ignore_errors=True)
    log(f"base model: {params:,} parameters, held-out loss {held_loss:.3f}, {record['tokens_per_second']} tokens/s")
    return record


def base_model_dir(config: BaseModelConfig | None = None, *, cache: str | None = None, log=print) -> str:
    """The folder of the base model for ``config``: the shipped base when ``config`` is the
    default (or None) and it is present, else a cached build (built now if missing)."""
    config = config or BaseModelConfig()
    if config == BaseModelConfig() and os.path.isfile(os.path.join(SHIPPED_BASE, BUILD_INFO)):
        return SHIPPED_BASE
    folder = os.path.join(cache or cache_dir(), "sentiment", f"base-{config.key()}")
    if not os.path.isfile(os.path.join(folder, BUILD_INFO)):
        log(f"building the base model into {folder} (cached for later runs)")
        import shutil

        staging = folder + ".partial"
        shutil.rmtree(staging, ignore_errors=True)
        build_base(config, staging, log=log)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    return folder
