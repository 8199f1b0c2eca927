"""TRL's ``--dataset_name``: one dataset, routed to ``--preferences`` or ``--demonstrations`` by its rows.

TRL's scripts train on ``--dataset_name`` (split ``--dataset_train_split``) and evaluate on its
``--dataset_test_split`` when ``eval_strategy`` is not ``no``; the trainer (DPO, SFT) decides what the
rows are. aihf reads preference pairs and demonstrations from separate sources, so the dataset's
first row decides: pairs (``chosen`` and ``rejected``) are preferences, anything else
demonstrations (the format checks that follow name any row that is neither).
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from ..methods import RL_METHODS, ignored_options
from .args import TrainArguments


_ANSWERS = {"chosen", "rejected", "completion", "messages"}


def dataset_kind(record) -> str:
    """``"preferences"`` for a row holding ``chosen`` and ``rejected``, else ``"demonstrations"``."""
    keys = set(map(str, record)) if isinstance(record, dict) else set()
    return "preferences" if {"chosen", "rejected"} <= keys else "demonstrations"


def route_dataset_name(args: TrainArguments) -> str | None:
    """Set ``args.data.preferences`` or ``.demonstrations`` (and the eval source of the same kind)
    from ``dataset_name``; returns the kind, or None without ``dataset_name``.

    Raises :class:`aihf.ConfigError` when the source of that kind is also given, or when evaluation is
    asked of one file (it has no test split); :class:`aihf.DataError` for an unreadable dataset.
    """
    from ..data import read_rows

    data = args.data
    if not data.dataset_name:
        return None
    where = args.describe("dataset_name")
    rows = read_rows(data.dataset_name, split=data.dataset_train_split)
    first = rows.records[0]
    if isinstance(first, dict) and "prompt" in first and not set(first) & _ANSWERS:
        # TRL's RLOO/GRPO data: the RL methods' --prompts; routed as demonstrations it would fail later.
        if args.run.method not in RL_METHODS or "prompts" in ignored_options(args.run.method, args.config.demo_loss):
            raise ConfigError(
                f"{where} holds prompt-only rows (TRL's RLOO/GRPO format), which {args.describe('method')} does "
                "not read: the RL methods (aihf_rl, rlhf, rft; aihf rloo) take them as --prompts"
            )
        if data.prompts:
            raise ConfigError(f"{where} holds prompt-only rows, and {args.describe('prompts')} is given too: give one")
        data.prompts, data.prompts_split = data.dataset_name, data.dataset_train_split
        args.origins["prompts"] = args.origins["dataset_name"]
        return "prompts"
    kind = dataset_kind(first)
    what = "preference pairs (chosen, rejected)" if kind == "preferences" else "demonstrations"
    if getattr(data, kind):
        raise ConfigError(f"{where} holds {what}, and {args.describe(kind)} is given too: give one of them")
    if kind == "demonstrations" and not data.preferences and kind in ignored_options(
        args.run.method, args.config.demo_loss
    ):
        raise ConfigError(
            f"{where} holds demonstrations (no chosen/rejected), which {args.describe('method')} does not read: "
            "it reads preference pairs (prompt/chosen/rejected rows)"
        )
    setattr(data, kind, data.dataset_name)
    setattr(data, f"{kind}_split", data.dataset_train_split)
    args.origins[kind] = args.origins["dataset_name"]
    eval_kind = f"eval_{kind}"
    evaluates = str(getattr(args.config.eval_strategy, "value", args.config.eval_strategy)) != "no"
    if not evaluates or getattr(data, eval_kind) or (kind == "demonstrations" and args.run.method in RL_METHODS):
        return kind  # (the RL methods evaluate the reward model on preference pairs only)
    if os.path.isfile(os.path.expanduser(data.dataset_name)):
        raise ConfigError(
            f"{where} is one file, with no {data.dataset_test_split!r} split to evaluate on "
            f"({args.describe('eval_strategy')}): give held-out rows with --{eval_kind}"
        )
    setattr(data, eval_kind, data.dataset_name)
    data.eval_split = data.dataset_test_split
    args.origins[eval_kind] = args.origins["dataset_name"]
    return kind
