"""The method presets: what ``method="dpo"`` (``aihf train --method dpo``, ``aihf dpo``) means in aihf.

Every baseline is AIHF (or AIHF-RL) with some weights fixed (docs/method.md, "Special cases"): DPO is
``demo_weight=0``, SFT ``pref_weight=0`` with the NLL demonstration loss, RLHF a reward model fitted on
the preferences and then frozen, and so on. This module is the one home of those presets, of the
options each method does not read, and of the checks across options that a method implies; the
command line and Python callers share it::

    from aihf.methods import config_for

    args = config_for("dpo", output_dir="runs/dpo", beta=0.1)      # an AIHFConfig with demo_weight=0
    args = config_for("rlhf", output_dir="runs/rlhf", reward_pretrain_steps=50, num_rounds=20)  # AIHFRLConfig

:func:`config_for` builds the method's config (:class:`aihf.llm.AIHFConfig`, or
:class:`aihf.llm.AIHFRLConfig` for :data:`RL_METHODS`) and refuses, with :class:`aihf.ConfigError`,
a keyword that contradicts the preset (``config_for("dpo", demo_weight=1.0)``) or a combination the
method cannot run; a keyword the method does not read draws a ``UserWarning``. The two-stage methods
(``sft_then_dpo``, ``sft_then_rlhf``) return the config of the whole run: pass it to
:func:`aihf.llm.pipelines.sft_then_dpo` or :func:`aihf.llm.pipelines.sft_then_rlhf`, which derive the
SFT stage's settings from it. :func:`apply_method` applies a preset to a config already built, and
words its refusals through a :class:`SettingSources` (``aihf train`` passes one that names the flag or
the YAML file and line each setting came from).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

from .commandline import did_you_mean, show
from .errors import ConfigError

METHODS = ("aihf", "dpo", "sft", "spin", "sft_then_dpo")
# Methods with an explicit reward model, trained by aihf.llm.AIHFRLTrainer.
RL_METHODS = ("aihf_rl", "rlhf", "rft", "sft_then_rlhf")

# What each method sets. A value set as explicitly as the method (both keywords, both flags, or both in
# the YAML) that disagrees is refused; a method set more explicitly overrides it, with a warning.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "aihf": {},
    "dpo": {"demo_weight": 0.0, "demo_loss": "nll"},
    "sft": {"pref_weight": 0.0, "demo_loss": "nll"},
    "spin": {"pref_weight": 0.0, "demo_loss": "self_play"},
    "sft_then_dpo": {"demo_weight": 1.0, "demo_loss": "nll"},
    "aihf_rl": {},
    "rlhf": {"demo_weight": 0.0, "freeze_reward_model": True},
    "rft": {"pref_weight": 0.0},
    "sft_then_rlhf": {"demo_weight": 1.0},
}
# TRL config fields with no field of that name in aihf: what to write instead (config_for's and aihf
# train's line for them; a "did you mean" would point at a field with another meaning).
TRL_FIELDS = {
    "max_completion_length": "TRL's max_completion_length: aihf bounds prompt + completion by max_length (prompts "
    "cut to max_prompt_length) and sampled completions by max_new_tokens",
    "completion_only_loss": "TRL's completion_only_loss: aihf's SFT loss is always on the completion tokens only",
    "packing": "TRL's packing: padding_free=True packs each batch's rows end to end",
    "dataset_text_field": "TRL's dataset_text_field: aihf reads prompt/completion or messages rows, not plain text",
}
# Why, for the line that refuses a contradiction.
_WHY = {
    "dpo": "DPO has no demonstration term",
    "sft": "SFT is the NLL of demonstrations alone (--method spin is its self-play counterpart)",
    "spin": "SPIN is self-play on demonstrations alone (--method sft is its NLL counterpart)",
    "sft_then_dpo": "its SFT stage trains demonstrations by NLL with weight 1, its DPO stage with weight 0",
    "rlhf": "RLHF fits the reward model on the preferences alone and then freezes it",
    "rft": "RFT (ML-IRL) learns the reward from the demonstrations alone",
    "sft_then_rlhf": "its SFT stage trains demonstrations with weight 1, its RLHF stage with weight 0",
}
# The stages of the two-stage baselines (their folders under output_dir).
STAGES = {"sft_then_dpo": ("sft", "dpo"), "sft_then_rlhf": ("sft", "rlhf")}

# Options each method does not read (config fields, and the command line's data, model and stage
# options). Set explicitly, one draws a warning; the same key in a YAML file passes quietly, as one
# YAML file serves several methods.
_TWO_STAGE = ("sft_num_train_epochs", "sft_max_steps", "sft_learning_rate")
_SELF_PLAY = (
    "self_play_round_steps",
    "self_play_round_epochs",
    "self_play_regen_prob",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "do_sample",
    "generation_batch_size",
    "generation_backend",
)
# What only the preference term (and the reference model it compares with) reads.
_PREFERENCE_TERM = (
    "loss_type",
    "label_smoothing",
    "precompute_ref_log_probs",
    "precompute_ref_batch_size",
    "prefix_sharing",
    "ref_model_name_or_path",
    "eval_preferences",
)
# What only the reward model's demonstration-vs-sample steps read (none under a frozen reward model).
_DEMO_REWARD_STEPS = ("demo_loss", "reward_clamp", "fresh_reward_samples", "reward_steps_per_round")
METHOD_IGNORES: dict[str, tuple[str, ...]] = {
    "aihf": (*_TWO_STAGE, "prompts"),  # and _SELF_PLAY under demo_loss=nll (see ignored_options)
    "dpo": (
        *_TWO_STAGE, *_SELF_PLAY, "demonstrations", "eval_demonstrations", "use_references_as_demonstrations", "prompts"
    ),
    "sft": (*_TWO_STAGE, *_SELF_PLAY, "beta", *_PREFERENCE_TERM, "prompts"),
    "spin": (*_TWO_STAGE, *_PREFERENCE_TERM, "prompts"),
    "sft_then_dpo": (*_SELF_PLAY, "prompts"),
    "aihf_rl": _TWO_STAGE,
    "rlhf": (*_TWO_STAGE, *_DEMO_REWARD_STEPS, "demonstrations"),
    "rft": (*_TWO_STAGE, "reward_pretrain_eval_steps", "reward_pretrain_patience", "reward_holdout_fraction"),
    "sft_then_rlhf": (*_DEMO_REWARD_STEPS, "prompts"),
}


def ignored_options(method: str, demo_loss: str) -> tuple[str, ...]:
    """The options ``method`` does not read (with ``demo_loss`` as the method leaves it)."""
    _check_name(method)
    if method == "aihf" and demo_loss != "self_play":
        return METHOD_IGNORES[method] + _SELF_PLAY
    return METHOD_IGNORES[method]


class SettingSources:
    """Where each setting came from, for the wording of warnings and refusals.

    ``level(name)``: 0 for a default, 1 for a setting from a file, 2 for an explicit one. This base
    serves Python callers: the method and every name in ``given`` are explicit (level 2) and are
    written as keywords (``method='dpo'``, ``demo_weight=1.0``). ``aihf train`` subclasses it to name
    flags and YAML files.
    """

    # How the caller says that a trained reward model is given (the rlhf preset may then skip pretraining).
    gives_trained_reward_model = "trained_reward_model=True and the trainer's reward_model="

    def __init__(self, method: str, config: Any, given: set[str] | frozenset[str] = frozenset()):
        self.method, self.config, self.given = method, config, set(given)

    def value(self, name: str) -> Any:
        return self.method if name == "method" else getattr(self.config, name, None)

    def level(self, name: str) -> int:
        return 2 if name == "method" or name in self.given else 0

    def forget(self, name: str) -> None:
        """``name`` was overridden by the method: from now on it is the method's setting, not the caller's."""
        self.given.discard(name)

    def spell(self, name: str, value: Any) -> str:
        """``name`` set to ``value`` as the caller writes it (a keyword here, a flag on the command line)."""
        return f"{name}={value!r}"

    def describe(self, name: str) -> str:
        """How ``name`` got its value: ``demo_weight=1.0``, ``demo_weight=0.0 (set by method='dpo')``, or
        ``max_steps=-1 (the default)``."""
        value = self.value(name)
        if name == "method" or name in self.given:
            return self.spell(name, value)
        if name in METHOD_SETTINGS.get(self.method, {}):
            return f"{name}={show(value)} (set by {self.describe('method')})"
        return f"{name}={show(value)} (the default)"


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)  # at the line that called apply_method


def apply_method(
    method: str,
    config: Any,
    sources: SettingSources | None = None,
    warn: Callable[[str], None] | None = None,
    trained_reward_model: bool = False,
) -> dict[str, Any]:
    """Set on ``config`` (an :class:`aihf.llm.AIHFConfig`, or :class:`aihf.llm.AIHFRLConfig` for
    :data:`RL_METHODS`) what ``method`` fixes, and check the options the method makes depend on each other.

    Returns ``{name: value}`` of what was changed (each also passed to ``sources.forget``). A setting less
    explicit than the method (``sources.level``) is overridden with a ``warn`` line; one as explicit that
    disagrees raises :class:`aihf.ConfigError`, as do both weights 0, a two-stage method without a
    preference stage, RLHF without reward pretraining (unless ``trained_reward_model``: RL on a given, frozen
    reward model, as TRL's RLOOTrainer), reward pretraining or a frozen reward under RFT,
    and ``max_steps`` or ``num_train_epochs`` set for an RL method that counts rounds. ``sources`` defaults to every
    attribute being a default; ``warn`` to ``warnings.warn``.
    """
    _check_name(method)
    sources = sources or SettingSources(method, config)
    warn = warn or _warn
    changed: dict[str, Any] = {}
    if method in RL_METHODS:
        free = f"{sources.spell('method', 'aihf_rl')}, which takes demo_weight and pref_weight as given"
    else:
        free = f"{sources.spell('method', 'aihf')}, which takes demo_weight, pref_weight and demo_loss as given"
    for name, implied in METHOD_SETTINGS[method].items():
        if getattr(config, name) == implied:
            continue
        if sources.level(name) >= sources.level("method"):
            raise ConfigError(
                f"{sources.describe('method')} contradicts {sources.describe(name)}: {_WHY[method]}. Remove one of "
                f"them, or use {free}"
            )
        # A --method flag over a value from the YAML: flags win, as everywhere else, but not silently.
        if sources.level(name) == 1:
            warn(
                f"{sources.describe('method')} sets {name}={show(implied)} ({_WHY[method]}), so "
                f"{sources.describe(name)} is not used"
            )
        setattr(config, name, implied)
        sources.forget(name)
        changed[name] = implied
    if config.demo_weight == 0 and config.pref_weight == 0:
        raise ConfigError(
            f"demo_weight and pref_weight are both 0 ({sources.describe('demo_weight')}; "
            f"{sources.describe('pref_weight')}): nothing to learn from"
        )
    if method in STAGES and config.pref_weight == 0:
        stage = STAGES[method][1].upper()
        raise ConfigError(
            f"{sources.spell('method', method)} needs pref_weight > 0 for its {stage} stage "
            f"({sources.describe('pref_weight')})"
        )
    if method in RL_METHODS:
        changed.update(_check_rl(method, config, sources, warn, trained_reward_model))
    return changed


def _check_rl(
    method: str, config: Any, sources: SettingSources, warn: Callable[[str], None], trained_reward_model: bool
) -> dict[str, Any]:
    changed: dict[str, Any] = {}
    this = sources.spell("method", method)
    if method in ("rlhf", "sft_then_rlhf") and config.reward_pretrain_steps < 1 and not trained_reward_model:
        raise ConfigError(
            f"{this} fits the reward model on the preferences before RL, but "
            f"{sources.describe('reward_pretrain_steps')}: set reward_pretrain_steps > 0 (and "
            "reward_pretrain_patience for early stopping), or give a trained reward model to run RL on "
            f"({sources.gives_trained_reward_model})"
        )
    if config.pref_weight == 0 and config.reward_pretrain_steps > 0:
        # Reward pretraining is Bradley-Terry on the preferences, which pref_weight=0 (rft) ignores.
        if sources.level("reward_pretrain_steps") >= sources.level("method"):
            raise ConfigError(
                f"{sources.describe('method')} with {sources.describe('pref_weight')} contradicts "
                f"{sources.describe('reward_pretrain_steps')}: reward pretraining fits the preferences, which "
                f"pref_weight=0 ignores. Remove one of them, or use {sources.spell('method', 'aihf_rl')}"
            )
        # A --method flag over a YAML written for all the RL methods (examples/aihf_rl.yaml): flags win.
        warn(
            f"{sources.describe('method')} ignores the preferences, so {sources.describe('reward_pretrain_steps')} "
            "is skipped"
        )
        config.reward_pretrain_steps = changed["reward_pretrain_steps"] = 0
        sources.forget("reward_pretrain_steps")
        if config.freeze_reward_model:
            raise ConfigError(
                f"{sources.describe('freeze_reward_model')} would run RL on an untrained reward model: "
                f"{sources.describe('method')} skips reward pretraining (it ignores the preferences)"
            )
    if method not in STAGES:  # there they size the SFT stage
        for name in ("max_steps", "num_train_epochs"):
            # max_steps <= 0 means "not set" (transformers' convention), e.g. --max_steps -1 over a shared YAML.
            if sources.level(name) and not (name == "max_steps" and config.max_steps <= 0):
                # Not mapped onto num_rounds: a round is several optimizer steps (policy and reward), and
                # training silently longer or shorter than asked is worse than one line now.
                raise ConfigError(
                    f"{sources.describe(name)}: {this} trains in rounds, not in steps or epochs: set num_rounds "
                    "(each round: policy_steps_per_round policy steps, then reward_steps_per_round reward steps)"
                )
    return changed


def ignored_settings(method: str, config: Any, sources: SettingSources) -> list[str]:
    """The explicitly set options (``sources.level`` 2, not None) that ``method`` does not read."""
    return [
        name
        for name in ignored_options(method, config.demo_loss)
        if sources.level(name) == 2 and sources.value(name) is not None
    ]


def config_class(method: str) -> type:
    """:class:`aihf.llm.AIHFRLConfig` for :data:`RL_METHODS`, else :class:`aihf.llm.AIHFConfig`."""
    _check_name(method)
    if method in RL_METHODS:
        from .llm.rl_config import AIHFRLConfig

        return AIHFRLConfig
    from .llm.config import AIHFConfig

    return AIHFConfig


def config_for(method: str = "aihf", trained_reward_model: bool = False, **overrides: Any):
    """The config of ``method`` with ``overrides`` (any field of its config class) on top of the preset.

    Returns an :class:`aihf.llm.AIHFConfig` (``aihf``, ``dpo``, ``sft``, ``spin``, ``sft_then_dpo``) or an
    :class:`aihf.llm.AIHFRLConfig` (``aihf_rl``, ``rlhf``, ``rft``, ``sft_then_rlhf``). Raises
    :class:`aihf.ConfigError` for an unknown method, an override the preset contradicts
    (``config_for("dpo", demo_weight=1.0)``: use ``method="aihf"``), or a combination the method cannot
    run (:func:`apply_method`); an override the method does not read warns (``UserWarning``).
    ``trained_reward_model=True`` says the trainer will get a trained ``reward_model=``: ``rlhf`` may then
    skip reward pretraining (``reward_pretrain_steps=0``) and run RL on it frozen, as TRL's RLOOTrainer.
    """
    cls = config_class(method)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        hints = "".join(f": {TRL_FIELDS[n]}" if n in TRL_FIELDS else did_you_mean(n, sorted(names)) for n in unknown)
        raise ConfigError(f"{cls.__name__} has no field {', '.join(unknown)} (method={method!r}){hints}")
    # Built once to read the defaults and check the overrides, then again with the preset applied, so
    # that the config's own checks see the final values.
    probe = cls(**overrides)
    sources = SettingSources(method, probe, set(overrides))
    said: list[str] = []
    changed = apply_method(method, probe, sources, said.append, trained_reward_model)
    said += [f"{name} is not used by method={method!r}" for name in ignored_settings(method, probe, sources)]
    config = cls(**{**overrides, **changed})
    for message in said:
        warnings.warn(message, UserWarning, stacklevel=2)
    return config


def _check_name(method: str) -> None:
    if method not in METHODS + RL_METHODS:
        trl = f" (TRL's {method} is {_TRL_TRAINERS[method]!r})" if method in _TRL_TRAINERS else ""
        raise ConfigError(f"unknown method {method!r}{trl}: choose one of {', '.join(METHODS + RL_METHODS)}")


# TRL trainer names a Python caller may try: RewardTrainer then RLOOTrainer is one rlhf run.
_TRL_TRAINERS = {"rloo": "rlhf", "reward": "rlhf"}


__all__ = [
    "METHODS",
    "METHOD_IGNORES",
    "METHOD_SETTINGS",
    "RL_METHODS",
    "STAGES",
    "TRL_FIELDS",
    "SettingSources",
    "apply_method",
    "config_class",
    "config_for",
    "ignored_options",
    "ignored_settings",
]
