"""The data of :class:`aihf.llm.AIHFRLTrainer`: preferences, demonstrations and the RL prompts, tokenised and
checked before any model is loaded, and the seeded samplers that draw from them (their state is two ints each,
saved in every checkpoint, so that a resumed run draws what an uninterrupted one would)."""

from __future__ import annotations

import dataclasses
import random
import warnings
from dataclasses import dataclass
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from ..data import Rows, prepare_demonstrations, prepare_preferences, references_as_demonstrations
from ..errors import ConfigError
from .model_setup import stable_seed
from .rl_config import AIHFRLConfig


class Cycler:
    """Seeded epochs over ``range(n)``: each epoch is a fresh permutation; the state is two ints."""

    def __init__(self, n: int, seed: int, stream: int):
        self.n, self.seed, self.stream = n, seed, stream
        self.epoch, self.pos = 0, 0
        self._order: list[int] | None = None

    def _perm(self) -> list[int]:
        if self._order is None:
            self._order = list(range(self.n))
            random.Random(stable_seed(self.seed, self.stream, self.epoch)).shuffle(self._order)
        return self._order

    def take(self, count: int) -> list[int]:
        out = []
        while len(out) < count:
            if self.pos == self.n:
                self.epoch, self.pos, self._order = self.epoch + 1, 0, None
            out.append(self._perm()[self.pos])
            self.pos += 1
        return out

    def take_shard(self, count: int, world: int, rank: int) -> list[int]:
        """This process's ``count`` of the next ``count * world`` indices (all processes advance alike)."""
        return self.take(count * world)[rank * count : (rank + 1) * count]

    def state(self) -> list[int]:
        return [self.epoch, self.pos]

    def load(self, state: list[int]) -> None:
        self.epoch, self.pos, self._order = state[0], state[1], None


@dataclass
class RLData:
    """Tokenised data of one AIHF-RL run.

    ``rl_prompts``: ``(prompt ids, demonstration index or -1)`` per unique RL prompt; ``holdout``: the pairs
    the reward pretraining is early-stopped on (the eval preferences, else a split of the preferences);
    ``samplers``: ``"rl"``, ``"pref"`` and ``"demo"`` :class:`Cycler` (``None`` for an unused source)."""

    preferences: datasets.Dataset | None
    demonstrations: datasets.Dataset | None
    eval_preferences: datasets.Dataset | None
    holdout: datasets.Dataset | None
    rl_prompts: list[tuple[list[int], int]]
    samplers: dict[str, Cycler | None]


def _columns(data: Any) -> set[str]:
    if isinstance(data, datasets.Dataset):
        return set(data.column_names)
    if isinstance(data, Rows):
        data = list(data.records[:1])
    if isinstance(data, list) and data and isinstance(data[0], dict):
        return set(data[0])
    return set()  # a path: read (and checked) as preferences


def is_prompt_only(data: Any) -> bool:
    """Whether ``data`` (a ``datasets.Dataset`` or a list of dicts) has a ``prompt`` column and no answers:
    TRL's prompt-only format, taken by ``AIHFRLTrainer(train_dataset=...)`` as extra RL prompts."""
    columns = _columns(data)
    return "prompt" in columns and not columns & {"chosen", "rejected", "completion", "messages"}


def is_demonstrations(data: Any) -> bool:
    """Whether ``data``'s rows are demonstrations (``completion`` or ``messages``, no ``chosen``/``rejected``)."""
    columns = _columns(data)
    return bool(columns & {"completion", "messages"}) and not columns & {"chosen", "rejected"}


def prepare_rl_data(
    args: AIHFRLConfig,
    tok: PreTrainedTokenizerBase,
    preferences: Any,
    demonstrations: Any,
    eval_preferences: Any,
    prompts: Any = None,
) -> RLData:
    """Read, check and tokenise the run's data (formats: :mod:`aihf.data.formats`); ``prompts`` (prompt-only
    rows) are added to the RL prompts. Raises :class:`aihf.DataError` for bad rows and
    :class:`aihf.ConfigError` when a source the weights use is missing."""
    kw = dict(max_length=args.max_length, max_prompt_length=args.max_prompt_length, eos_token=args.eos_token)
    # A frozen reward model takes no reward steps: its preference term is never computed.
    uses_prefs = (args.pref_weight > 0 and not args.freeze_reward_model) or args.reward_pretrain_steps > 0
    prefs = demos = None
    if preferences is not None:
        prefs = prepare_preferences(
            preferences, tok, implicit_prompt_marker=args.implicit_prompt_marker, name="preferences", **kw
        )
    elif uses_prefs:
        what = f"pref_weight={args.pref_weight}" if args.pref_weight > 0 else "reward_pretrain_steps > 0"
        raise ConfigError(f"{what} but no preferences were given")
    if args.demo_weight > 0:
        if demonstrations is not None:
            demos = prepare_demonstrations(demonstrations, tok, name="demonstrations", **kw)
        refs = references_as_demonstrations(prefs) if prefs is not None else None
        if refs is not None and args.use_references_as_demonstrations:
            demos = refs if demos is None else datasets.concatenate_datasets([demos, refs])
        if demos is None:
            raise ConfigError(f"demo_weight={args.demo_weight} but no demonstrations were given")
    elif demonstrations is not None:
        warnings.warn("demo_weight=0: the demonstrations are ignored", stacklevel=4)
    prompts_of_prefs: list = []
    if prefs is not None and not uses_prefs:
        if args.freeze_reward_model:  # RL on a given reward model: the pairs still hold prompts
            warnings.warn(
                "freeze_reward_model=True, reward_pretrain_steps=0: the reward model does not learn from the "
                "preference pairs; their prompts are RL prompts",
                stacklevel=4,
            )
            prompts_of_prefs = list(prefs["prompt_ids"])
        else:
            warnings.warn("pref_weight=0: the preference pairs are ignored", stacklevel=4)
        prefs = None
    evals = None
    if eval_preferences is not None:
        evals = prepare_preferences(
            eval_preferences, tok, implicit_prompt_marker=args.implicit_prompt_marker, name="eval_preferences", **kw
        )

    # Early stopping of the reward pretraining holds out pairs when none are given.
    holdout = evals
    if prefs is not None and args.reward_pretrain_patience is not None and holdout is None:
        n_out = max(1, round(len(prefs) * args.reward_holdout_fraction))
        if len(prefs) - n_out < 1:
            raise ConfigError(f"reward_holdout_fraction leaves no training pairs out of {len(prefs)}")
        split = prefs.train_test_split(test_size=n_out, seed=args.seed, shuffle=True)
        prefs, holdout = split["train"], split["test"]

    # The RL prompts: (prompt ids, demonstration index or -1), unique prompts of the sources used.
    pool: list[tuple[list[int], int]] = []
    if args.rl_prompts in ("all", "demonstrations") and demos is not None:
        pool += [(list(p), j) for j, p in enumerate(demos["prompt_ids"])]
    extra = []
    if args.rl_prompts in ("all", "preferences"):
        extra += list(prefs["prompt_ids"]) if prefs is not None else prompts_of_prefs
    if prompts is not None:
        extra += list(prompt_only_ids(prompts, tok, args))
    seen = {tuple(p) for p, _ in pool}
    for p in extra:
        if tuple(p) not in seen:
            seen.add(tuple(p))
            pool.append((list(p), -1))
    if not pool:
        raise ConfigError(f"rl_prompts='{args.rl_prompts}' but that source is not used or has no prompts")
    seed = args.seed
    samplers = {
        "rl": Cycler(len(pool), seed, 1),
        "pref": Cycler(len(prefs), seed, 2) if prefs is not None else None,
        "demo": Cycler(len(demos), seed, 3) if demos is not None else None,
    }
    return RLData(prefs, demos, evals, holdout, pool, samplers)


def prompt_only_ids(prompts: Any, tok: PreTrainedTokenizerBase, args: AIHFRLConfig) -> list[list[int]]:
    """Prompt-only rows (a list of dicts, a ``datasets.Dataset``, or :class:`aihf.data.Rows` read from a
    file, whose errors then name file and line) tokenised as demonstration prompts are (a stand-in answer,
    dropped, completes each row). Raises :class:`aihf.DataError` for a bad row."""
    stand_in = [{"role": "assistant", "content": "x"}]

    def with_stand_in(r):
        if isinstance(r, dict) and "prompt" in r:
            return {"prompt": r["prompt"], "completion": " x" if isinstance(r["prompt"], str) else stand_in}
        return r

    # Row by row, not through Dataset.from_list: a row of the wrong type must reach the format checks,
    # which name it, rather than fail in pyarrow.
    if isinstance(prompts, Rows):
        rows = dataclasses.replace(prompts, records=[with_stand_in(r) for r in prompts.records])
        name = None
    else:
        rows, name = [with_stand_in(r) for r in prompts], "prompt-only train_dataset"
    demos = prepare_demonstrations(
        rows,
        tok,
        name=name,
        max_length=args.max_length,
        max_prompt_length=args.max_prompt_length,
        eos_token=args.eos_token,
    )
    return demos["prompt_ids"]
