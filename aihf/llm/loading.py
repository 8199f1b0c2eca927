"""Loading a policy and its tokenizer from a local folder, a Hub id or a GGUF file.

``AIHFTrainer("path-or-id", model_init_kwargs={...})`` calls :func:`load_policy`, as TRL's
trainers load a model named by a string. A GGUF checkpoint (``model_init_kwargs={"gguf_file":
"model.Q8_0.gguf"}``) is dequantised into ordinary dense weights, since a Trainer cannot update
GGUF's quantised blocks; the tokenizer is then rebuilt from the GGUF metadata.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..errors import ConfigError

# Keyword arguments of from_pretrained that also apply to the tokenizer.
_TOKENIZER_KWARGS = ("gguf_file", "revision", "trust_remote_code", "token", "cache_dir", "subfolder")


def load_policy(
    model_id: str, model_init_kwargs: dict[str, Any] | None = None, *, load_tokenizer: bool = True
) -> tuple[PreTrainedModel, Any]:
    """``(model, tokenizer)`` loaded from ``model_id`` (a folder, a Hub id, or a ``.gguf`` file path).

    ``model_init_kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` as in TRL, except that:

    * ``dtype`` defaults to float32, so that the optimizer updates float32 master weights (turn on
      mixed precision with ``bf16=True``); a string (``"bfloat16"``, ``"auto"``) is accepted;
    * ``gguf_file`` loads that GGUF file of the folder and dequantises it (GGUF's quantised blocks
      cannot be trained); a ``model_id`` ending in ``.gguf`` means the same;
    * ``trust_remote_code`` stays False unless given.

    The tokenizer (``None`` unless ``load_tokenizer``) comes from the same place with the same
    ``gguf_file``/``revision``/``trust_remote_code``. Raises :class:`aihf.ConfigError` for a
    bad ``dtype`` or a GGUF file that does not exist.
    """
    kwargs = dict(model_init_kwargs or {})
    if model_id.endswith(".gguf") and "gguf_file" not in kwargs:
        model_id, kwargs["gguf_file"] = os.path.dirname(model_id) or ".", os.path.basename(model_id)
    kwargs.setdefault("trust_remote_code", False)
    kwargs["dtype"] = _dtype(kwargs.get("dtype", torch.float32))
    gguf_file = kwargs.get("gguf_file")
    if gguf_file:
        if os.path.isdir(model_id) and not os.path.isfile(os.path.join(model_id, gguf_file)):
            raise ConfigError(f"gguf_file: {os.path.join(model_id, gguf_file)} does not exist")
        if "quantization_config" not in kwargs:
            from transformers import GgufConfig

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
    tokenizer = None
    if load_tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(model_id, **{k: kwargs[k] for k in _TOKENIZER_KWARGS if k in kwargs})
    model = AutoModelForCausalLM.from_pretrained(model_id, **kwargs)
    return model, tokenizer


def _dtype(value: Any) -> Any:
    if isinstance(value, torch.dtype) or value == "auto":
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(
            f"model_init_kwargs: dtype={value!r} is not a torch dtype (e.g. 'float32', 'bfloat16', 'auto')"
        )
    return dtype


def is_loadable(name_or_path: str | None) -> bool:
    """Whether ``from_pretrained(name_or_path)`` can find a model config there: a folder with
    ``config.json``, or a Hub id. A folder holding only a ``.gguf`` file is not."""
    if not name_or_path:
        return False
    if os.path.isdir(name_or_path):
        return os.path.isfile(os.path.join(name_or_path, "config.json"))
    return not os.path.exists(name_or_path)
