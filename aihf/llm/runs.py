"""Keeping runs apart: what an output folder already holds, and each run's fingerprint.

A fingerprint (``aihf_run.json`` in every checkpoint) records what makes a run this run: the
model, a digest of the tokenised data, the objective and the length of training. Resuming from
a checkpoint whose fingerprint differs would silently continue another run, so it is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..errors import ConfigError

FINGERPRINT = "aihf_run.json"
# Files that mean "a model or a finished run is here", besides checkpoint-* folders.
RUN_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "trainer_state.json",
)
# The AIHFConfig fields that define the objective.
OBJECTIVE_FIELDS = (
    "demo_weight",
    "pref_weight",
    "demo_loss",
    "beta",
    "loss_type",
    "label_smoothing",
    "use_references_as_demonstrations",
)


def model_source(model: Any, model_init_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where the policy came from: the path or Hub id (with its GGUF file and revision), or for a
    model object its ``name_or_path``, or failing that its class and a digest of its config."""
    if isinstance(model, str):
        kwargs = model_init_kwargs or {}
        return {"model": model, "gguf_file": kwargs.get("gguf_file"), "revision": kwargs.get("revision")}
    name = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    if not name:
        config = getattr(model, "config", None)
        text = config.to_json_string(use_diff=False) if config is not None else ""
        name = f"<{type(model).__name__} {hashlib.sha256(text.encode()).hexdigest()[:12]}>"
    return {"model": name, "gguf_file": None, "revision": None}


def data_digest(dataset: Any, columns: tuple[str, ...]) -> str | None:
    """SHA-256 of the token ids in ``columns`` of a tokenised ``datasets.Dataset`` (None for None)."""
    if dataset is None:
        return None
    import numpy as np
    import pyarrow.compute as pc

    if getattr(dataset, "_indices", None) is not None:
        dataset = dataset.flatten_indices()
    table = dataset.data.table
    digest = hashlib.sha256()
    for column in columns:
        values = table.column(column).combine_chunks()
        digest.update(column.encode())
        digest.update(np.asarray(pc.list_value_length(values), dtype=np.int64).tobytes())
        digest.update(np.asarray(pc.list_flatten(values), dtype=np.int64).tobytes())
    return digest.hexdigest()


def fingerprint(source: dict[str, Any], preferences: Any, demonstrations: Any, args: Any, peft: bool) -> dict:
    """The JSON-able description of a run that a resumed run must match."""
    return {
        **source,
        "peft": peft,
        "preferences": data_digest(preferences, ("prompt_ids", "chosen_ids", "rejected_ids")),
        "demonstrations": data_digest(demonstrations, ("prompt_ids", "completion_ids")),
        **{name: getattr(args, name) for name in OBJECTIVE_FIELDS},
        "max_steps": args.max_steps,
        "num_train_epochs": args.num_train_epochs if args.max_steps <= 0 else None,
    }


def write_fingerprint(folder: str, print_: dict) -> None:
    with open(os.path.join(folder, FINGERPRINT), "w") as f:
        json.dump(print_, f, indent=2)


def read_fingerprint(folder: str) -> dict | None:
    path = os.path.join(folder, FINGERPRINT)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def differences(saved: dict, current: dict) -> list[str]:
    """``"key <saved> there, <current> here"`` for every key whose value differs (after a JSON round trip)."""
    current = json.loads(json.dumps(current))
    keys = sorted(set(saved) | set(current))
    return [f"{k} {saved.get(k)!r} there, {current.get(k)!r} here" for k in keys if saved.get(k) != current.get(k)]


def previous_run(output_dir: str) -> list[str]:
    """Names in ``output_dir`` that belong to a run: ``checkpoint-*`` folders and model/state files."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if (name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and os.path.isdir(path)) or name in RUN_FILES:
            found.append(name)
    return found


def check_output_dir(output_dir: str, overwrite: bool, remedy: str | None = None) -> list[str]:
    """What :func:`previous_run` finds in ``output_dir``; raises :class:`aihf.ConfigError` if it
    finds anything and ``overwrite`` is off. Cheap, so callers run it before loading a model.
    ``remedy`` replaces the error's advice (default: a trainer's options). An ``output_dir`` that
    is (or lies under) a file, not a folder, is refused too."""
    existing = os.path.abspath(output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == os.path.abspath(output_dir) else f"lies under a file, {existing}"
        raise ConfigError(f"output_dir {output_dir} {where}, not a folder")
    found = previous_run(output_dir)
    if found and not overwrite:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        remedy = remedy or (
            "set overwrite_output_dir=True (--overwrite_output_dir true) to replace it, resume_from_checkpoint to "
            "continue it, or choose another output_dir"
        )
        raise ConfigError(f"output_dir {output_dir} already holds another run ({shown}): {remedy}")
    return found
