"""Configuration of control runs. Each field's ``help`` is its ``aihf control`` CLI help.

Presets (``--preset``) replace the defaults; flags still win:

* ``ci``: seconds-sized runs for tests (tiny nets, few steps);
* ``cpu``: the CPU benchmark table (64x64 SAC nets, batch 128, one gradient step per two env
  steps, 70k env steps per run, SAC on the buffer-standardised learned reward; a run takes about
  5.5 min on one quiet core, docs/control.md "Presets and budgets");
* ``long``: the ``cpu`` preset's SAC and reward settings for 300k env steps per run (60 rounds), the
  longer benchmark (docs/control.md, "The long preset", has its CPU-hours);
* ``paper``: the authors' budgets (256x256 SAC, batch 256, one gradient step per env step,
  1M env steps per run, 5000 SAC steps per round).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field

from ..errors import ConfigError

# The null rewards: the same SAC loop on a reward that is never trained (a constant, or the reward net
# as initialised); what a learned reward must beat to be a result (docs/control.md, "Null rewards").
NULL_METHODS = ("null_constant", "null_untrained")
# The reference: the same SAC loop on the env's own reward, what a perfect learned reward could reach at
# this budget (docs/control.md, "The true-reward reference"). Neither a learned reward nor a null one.
TRUE_REWARD = "true_reward"
METHODS = ("aihf", "pref_rl", "ml_irl", "bc", "two_stage", *NULL_METHODS, TRUE_REWARD)


@dataclass
class ControlConfig:
    """One control run: ``aihf control train``."""

    env_id: str = field(default="HalfCheetah-v5", metadata={"help": "Any Gymnasium id with Box spaces."})
    method: str = field(
        default="aihf",
        metadata={
            "help": "aihf: demo_weight/pref_weight as set; pref_rl: demo_weight=0 (reward from preferences, "
            "SAC on it); ml_irl: pref_weight=0; bc: behaviour cloning of the demonstrations; two_stage: reward "
            "fitted on preferences first (reward_pretrain_steps), then ML-IRL from it; null_constant / null_untrained: "
            "the null-reward baselines, SAC on a reward that is never trained (0, shifted by the survival bonus, or "
            "the reward net as initialised); true_reward: SAC on the env's reward: what a perfect learned reward could "
            "reach at this budget (a reference, not a method from the data).",
            "choices": list(METHODS),
        },
    )
    demonstrations: str | None = field(default=None, metadata={"help": "Trajectory .npz of expert demonstrations."})
    preferences: str | None = field(default=None, metadata={"help": "Preference-pair .npz (segment pairs)."})
    num_demonstrations: int | None = field(
        default=None, metadata={"help": "Use the first N demonstration episodes (default: all)."}
    )
    num_preferences: int | None = field(
        default=None, metadata={"help": "Use the first N preference pairs (default: all; 0: none)."}
    )
    reference_returns: str | None = field(
        default=None,
        metadata={
            "help": "JSON with random_return and expert_return for normalised scores "
            "(default: meta.json beside the demonstrations, if present)."
        },
    )
    output_dir: str = field(default="runs/control", metadata={"help": "Where checkpoints and result.json go."})
    result_file: str | None = field(
        default=None, metadata={"help": "Also write the result JSON to this path (the benchmark's per-run file)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of torch, NumPy, the envs and SAC."})
    resume: bool = field(
        default=True, metadata={"help": "Continue from output_dir/checkpoint if this run wrote one there."}
    )
    # Budget
    rounds: int = field(default=12, metadata={"help": "Rounds of (SAC steps, reward steps)."})
    sac_steps_per_round: int = field(default=5000, metadata={"help": "Env steps of SAC per round."})
    # SAC (stable-baselines3)
    net_arch: str = field(default="64,64", metadata={"help": "SAC actor and critic hidden sizes, comma-separated."})
    sac_learning_rate: float = field(default=3e-4, metadata={"help": "SAC learning rate."})
    batch_size: int = field(default=128, metadata={"help": "SAC minibatch size."})
    buffer_size: int = field(default=1_000_000, metadata={"help": "SAC replay buffer size."})
    learning_starts: int = field(default=1000, metadata={"help": "Random-action env steps before SAC updates."})
    train_freq: int = field(default=2, metadata={"help": "Env steps between SAC updates."})
    gradient_steps: int = field(default=1, metadata={"help": "SAC gradient steps per update."})
    gamma: float = field(default=0.99, metadata={"help": "Discount."})
    tau: float = field(default=0.005, metadata={"help": "Target network soft-update rate."})
    sac_backend: str = field(
        default="sb3",
        metadata={
            "help": "SAC's library: sb3 (stable-baselines3, torch) or sbx (sbx-rl, JAX: ~1.5x the env steps per "
            "CPU-second at 64x64, ~1.25x at 256x256; pip install \"aihf[sbx]\", ~690 MB). Same algorithm, settings "
            "and relabelled replay buffer; a run resumes only with the backend it started with.",
            "choices": ["sb3", "sbx"],
        },
    )
    # Reward
    demo_weight: float = field(default=1.0, metadata={"help": "w_D: weight of the ML-IRL demonstration term."})
    pref_weight: float = field(default=1.0, metadata={"help": "w_P: weight of the Bradley-Terry preference term."})
    demo_loss: str = field(
        default="linear",
        metadata={
            "help": "The ML-IRL term's form (method.md, Instantiations 1): linear, -(r(demo state) - r(policy state)) "
            "as in the authors' control code, which pushes both sides to the reward bound; or logistic, "
            "-log sigmoid(r(demo state) - r(policy state)), which stops pushing once a pair is separated.",
            "choices": ["linear", "logistic"],
        },
    )
    reward_net_arch: str = field(default="64,64", metadata={"help": "Reward MLP hidden sizes, comma-separated."})
    reward_input: str = field(
        default="state",
        metadata={"help": "Reward over the state or state and action.", "choices": ["state", "state_action"]},
    )
    reward_bound: float = field(default=10.0, metadata={"help": "The reward lies in (-bound, bound)."})
    sac_reward_scale: float = field(
        default=1.0, metadata={"help": "SAC is trained on this multiple of the (shifted) learned reward."}
    )
    survival_bonus: bool = field(
        default=True,
        metadata={
            "help": "Train SAC on r + reward_bound >= 0, so that ending an episode early never pays (envs that "
            "terminate, e.g. Hopper); false: on r itself (a constant shift only matters where episodes can end early)."
        },
    )
    sac_reward_normalization: str = field(
        default="none",
        metadata={
            "help": "buffer: after every reward update SAC sees (r - mean) / std of the learned reward over up to "
            "normalization_samples replay-buffer states (the data's states before SAC has stored any), so a reward "
            "that moved little is still a reward of unit spread; with survival_bonus the shift is the lowest "
            "sampled reward instead of the mean. none: the raw (shifted) reward.",
            "choices": ["none", "buffer"],
        },
    )
    normalization_samples: int = field(
        default=10_000, metadata={"help": "Replay-buffer states (evenly spaced) scored for sac_reward_normalization."}
    )
    reward_learning_rate: float = field(default=1e-3, metadata={"help": "Adam learning rate of the reward."})
    reward_steps_per_round: int = field(default=20, metadata={"help": "Reward gradient steps per round."})
    reward_batch_size: int = field(
        default=256, metadata={"help": "States per side of the ML-IRL term and pairs of the BT term per step."}
    )
    policy_sample_steps: int | None = field(
        default=None,
        metadata={
            "help": "Policy samples of the ML-IRL term: the last N transitions SAC collected (fresh rollouts of "
            "the current policy; default: sac_steps_per_round)."
        },
    )
    reward_pretrain_steps: int = field(
        default=500, metadata={"help": "Reward steps on preferences alone before round 1 (two_stage and pref_rl)."}
    )
    # Behaviour cloning
    bc_steps: int = field(default=5000, metadata={"help": "bc: gradient steps."})
    bc_learning_rate: float = field(default=1e-3, metadata={"help": "bc: Adam learning rate."})
    # Evaluation
    eval_every: int = field(default=1, metadata={"help": "Evaluate every N rounds (and after the last)."})
    eval_episodes: int = field(
        default=5, metadata={"help": "Deterministic episodes per evaluation during training (the learning curve)."}
    )
    final_eval_episodes: int = field(
        default=10,
        metadata={
            "help": "Deterministic episodes of the last evaluation, the run's reported score (and of bc's only one); "
            "5 episodes can differ from 10 by 0.1 normalised."
        },
    )
    torch_threads: int = field(default=1, metadata={"help": "torch.set_num_threads (1: one core per run)."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    skip_nonfinite_steps: bool = field(
        default=False,
        metadata={
            "help": "Skip a reward step whose loss term or gradient is NaN/inf (counted in nonfinite/skipped_steps, "
            "one line on stderr each) instead of stopping the run with an error naming the round, step and term."
        },
    )

    def validate(self, source: str = "the flags") -> ControlConfig:
        """Raise :class:`aihf.ConfigError` naming the first bad setting; returns self."""
        check_settings(self, source)
        if self.method not in METHODS:
            raise ConfigError(f"method={self.method!r} (from {source}) is not one of {list(METHODS)}")
        if self.sac_backend not in ("sb3", "sbx"):
            raise ConfigError(f"sac_backend={self.sac_backend!r} (from {source}) is not one of ['sb3', 'sbx']")
        for name in ("demonstrations", "preferences", "reference_returns", "result_file"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                raise ConfigError(f"{name}={value!r} (from {source}) must be a file path (leave it unset for none)")
        if self.result_file is not None and os.path.isdir(self.result_file):
            raise ConfigError(f"result_file={self.result_file!r} (from {source}) is a folder, not a file path")
        if self.demonstrations is None and self.method not in ("pref_rl", TRUE_REWARD):
            raise ConfigError(f"demonstrations (from {source}) is required for method={self.method}")
        uses_prefs = self.method in ("pref_rl", "two_stage") or (self.method == "aihf" and self.pref_weight > 0)
        if uses_prefs and self.method != "aihf":
            if self.preferences is None:
                raise ConfigError(f"preferences (from {source}) are required for method={self.method}")
            if self.num_preferences == 0:
                raise ConfigError(
                    f"num_preferences=0 (from {source}) leaves method={self.method} no pairs to learn from: "
                    "give at least 1"
                )
        for name in (
            "rounds",
            "sac_steps_per_round",
            "batch_size",
            "reward_batch_size",
            "eval_episodes",
            "final_eval_episodes",
            "train_freq",
            "eval_every",
            "torch_threads",
            "normalization_samples",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} (from {source}) must be >= 1")
        for name in (
            "demo_weight",
            "pref_weight",
            "reward_steps_per_round",
            "reward_pretrain_steps",
            "bc_steps",
            "learning_starts",
            "gradient_steps",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} (from {source}) must be >= 0")
        if self.reward_bound <= 0:
            raise ConfigError(f"reward_bound={self.reward_bound} (from {source}) must be > 0")
        if self.sac_reward_scale <= 0:
            raise ConfigError(f"sac_reward_scale={self.sac_reward_scale} (from {source}) must be > 0")
        for name in ("net_arch", "reward_net_arch"):
            try:
                sizes = parse_sizes(getattr(self, name))
            except ValueError:
                sizes = []
            if not sizes or min(sizes) < 1:
                raise ConfigError(
                    f"{name}={getattr(self, name)!r} (from {source}) must be positive integers like 64,64"
                )
        return self

    @property
    def effective_weights(self) -> tuple[float, float]:
        """(w_D, w_P) after the method's reduction (method.md, "Reductions")."""
        if self.method in ("bc", TRUE_REWARD) or self.method in NULL_METHODS:
            return 0.0, 0.0  # no reward is learned
        if self.method == "pref_rl":
            return 0.0, 1.0
        if self.method in ("ml_irl", "two_stage"):
            return 1.0 if self.demo_weight == 0 else self.demo_weight, 0.0
        return self.demo_weight, self.pref_weight


# Settings each method does not use: `aihf control train` warns in one line for each one given as a flag.
_BC_ONLY = ("bc_steps", "bc_learning_rate")
_BC_USES = {
    "env_id", "method", "demonstrations", "num_demonstrations", "reference_returns", "output_dir", "result_file",
    "seed", "resume", "net_arch", "batch_size", "final_eval_episodes", "torch_threads", "progress", *_BC_ONLY,
}  # fmt: skip
# The null rewards never train: every setting of the reward step is unused, and the constant has no net.
_REWARD_STEP = (
    "preferences", "num_preferences", "demo_weight", "pref_weight", "reward_learning_rate", "reward_steps_per_round",
    "reward_batch_size", "policy_sample_steps", "reward_pretrain_steps", "demo_loss",
)  # fmt: skip
METHOD_IGNORES: dict[str, tuple[str, ...]] = {
    "aihf": (*_BC_ONLY, "reward_pretrain_steps"),
    "pref_rl": (*_BC_ONLY, "demo_weight", "pref_weight", "policy_sample_steps", "demo_loss"),
    "ml_irl": (*_BC_ONLY, "preferences", "num_preferences", "pref_weight", "reward_pretrain_steps"),
    "two_stage": (*_BC_ONLY, "pref_weight"),
    "bc": tuple(f.name for f in dataclasses.fields(ControlConfig) if f.name not in _BC_USES),
    "null_untrained": (*_BC_ONLY, *_REWARD_STEP),
    "null_constant": (*_BC_ONLY, *_REWARD_STEP, "reward_net_arch", "reward_input", "normalization_samples"),
    # The env's reward as Gymnasium returns it: no data, no reward net, no shift, scale or normalisation. As for
    # pref_rl, demonstrations is never opened but locates the default reference returns (meta.json beside it).
    TRUE_REWARD: (
        "num_demonstrations", *_BC_ONLY, *_REWARD_STEP, "reward_net_arch", "reward_input",
        "reward_bound", "sac_reward_scale", "survival_bonus", "sac_reward_normalization", "normalization_samples",
        "skip_nonfinite_steps",
    ),  # fmt: skip
}


def unused_settings(config: ControlConfig, given: set[str]) -> list[str]:
    """The settings in ``given`` (those set by a flag) that ``config.method`` does not use, in field
    order. ``--num_preferences 0`` (with or without ``--preferences``) says "no pairs" explicitly and
    is not reported: the benchmark's ML-IRL and BC runs are written that way."""
    ignored = set(METHOD_IGNORES[config.method])
    if config.num_preferences == 0:
        ignored -= {"preferences", "num_preferences"}
    return [f.name for f in dataclasses.fields(config) if f.name in given and f.name in ignored]


def check_settings(config, source: str = "the flags") -> None:
    """The checks :meth:`ControlConfig.validate` and :meth:`CollectConfig.validate` share, and the
    impossible combinations of settings; raises :class:`aihf.ConfigError` naming the first bad
    setting and where it came from. Everything here would otherwise fail (or silently misbehave)
    deep inside SB3 or torch, after files were written."""
    has = lambda name: hasattr(config, name)  # noqa: E731

    def bad(name: str, rule: str):
        return ConfigError(f"{name}={getattr(config, name)!r} (from {source}) {rule}")

    for f in dataclasses.fields(config):  # a NaN or an infinity passes every comparison below
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise bad(f.name, "must be a finite number")
    if not isinstance(config.env_id, str) or not config.env_id.strip():
        raise bad("env_id", "must be a Gymnasium id like Pendulum-v1")
    if not str(config.output_dir).strip():
        raise bad("output_dir", "must be a folder path")
    if os.path.exists(config.output_dir) and not os.path.isdir(config.output_dir):
        raise bad("output_dir", "is a file, not a folder")
    if not 0 <= config.seed <= 2**32 - 1:
        raise bad("seed", "must be in [0, 2**32 - 1]")
    if config.torch_threads < 1:
        raise bad("torch_threads", "must be >= 1")
    for name in ("sac_learning_rate", "reward_learning_rate", "bc_learning_rate"):
        if has(name) and getattr(config, name) <= 0:
            raise bad(name, "must be > 0")
    if has("gamma") and not 0 <= config.gamma <= 1:
        raise bad("gamma", "must be in [0, 1]")
    if has("tau") and not 0 < config.tau <= 1:
        raise bad("tau", "must be in (0, 1]")
    if has("buffer_size"):
        if config.buffer_size < 1:
            raise bad("buffer_size", "must be >= 1")
        if config.batch_size > config.buffer_size:
            raise ConfigError(
                f"batch_size={config.batch_size} exceeds buffer_size={config.buffer_size} (from {source}): "
                "SAC could never fill a minibatch"
            )
    if has("num_demonstrations") and config.num_demonstrations is not None and config.num_demonstrations < 1:
        raise bad("num_demonstrations", "must be >= 1 (leave it unset for all episodes)")
    if has("num_preferences") and config.num_preferences is not None and config.num_preferences < 0:
        raise bad("num_preferences", "must be >= 0")
    if has("policy_sample_steps") and config.policy_sample_steps is not None and config.policy_sample_steps < 1:
        raise bad("policy_sample_steps", "must be >= 1 (leave it unset for sac_steps_per_round)")
    if has("method"):
        if config.method == "bc" and config.bc_steps < 1:
            raise bad("bc_steps", "must be >= 1 for method=bc")
        if config.method in ("ml_irl", "two_stage") and config.demo_weight == 0:
            # Was silently run with w_D = 1 (effective_weights): the ML-IRL term is all these methods learn from.
            alone = "its reward steps are the ML-IRL term alone"
            raise bad("demo_weight", f"must be > 0 for method={config.method}: {alone}")
        if config.method == "aihf" and config.demo_weight == 0 and config.pref_weight == 0:
            raise ConfigError(
                f"demo_weight and pref_weight are both 0 (from {source}): method=aihf would learn no reward"
            )
    if has("snapshots"):
        if 1 <= config.expert_steps < config.snapshots:
            raise ConfigError(
                f"snapshots={config.snapshots} exceeds expert_steps={config.expert_steps} (from {source}): "
                "each snapshot needs at least one env step"
            )
        try:
            sizes = parse_sizes(config.net_arch)
        except ValueError:
            sizes = []
        if not sizes or min(sizes) < 1:
            raise bad("net_arch", "must be positive integers like 64,64")


def config_from_dict(cls, values, source: str):
    """``cls`` with the settings in ``values`` (a run's saved ``config``, read from ``source``):
    an unknown key or a value of the wrong type is a one-line :class:`aihf.ConfigError`."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: 'config' must be a mapping of settings, got {type(values).__name__}")
    fields = {f.name: str(f.type) for f in dataclasses.fields(cls)}  # annotations are strings here
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{key}={value!r} (from {source}) is not a setting of {cls.__name__}")
        kind, number = fields[key], isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = (
            (value is None and "None" in kind)
            or (kind.startswith("bool") and isinstance(value, bool))
            or (kind.startswith("int") and number and isinstance(value, int))
            or (kind.startswith("float") and number)
            or (kind.startswith("str") and isinstance(value, str))
        )
        if not ok:
            raise ConfigError(f"{key}={value!r} (from {source}) must be of type {kind}")
    return dataclasses.replace(cls(), **values)


def parse_sizes(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


@dataclass
class CollectConfig:
    """Data for one env: ``aihf control collect``."""

    env_id: str = field(default="HalfCheetah-v5", metadata={"help": "Any Gymnasium id with Box spaces."})
    output_dir: str = field(default="data/control", metadata={"help": "Folder for demos.npz, preferences.npz, ..."})
    seed: int = field(default=0, metadata={"help": "Seed of the demonstrator and the labeller."})
    expert_steps: int = field(default=100_000, metadata={"help": "Env steps of SAC on the true reward."})
    net_arch: str = field(default="64,64", metadata={"help": "Demonstrator SAC hidden sizes."})
    batch_size: int = field(default=128, metadata={"help": "Demonstrator SAC minibatch size."})
    train_freq: int = field(default=2, metadata={"help": "Demonstrator SAC env steps between updates."})
    snapshots: int = field(
        default=5, metadata={"help": "Policies of increasing quality kept along the demonstrator's training."}
    )
    num_demonstrations: int = field(default=10, metadata={"help": "Expert episodes (deterministic policy)."})
    pool_episodes_per_snapshot: int = field(
        default=8, metadata={"help": "Stochastic episodes per snapshot (and of the random policy) for the pool."}
    )
    num_preferences: int = field(default=1000, metadata={"help": "Labelled pairs written (runs take the first N)."})
    segment_length: int = field(
        default=50, metadata={"help": "Steps per preference segment (at least the episode length: whole episodes)."}
    )
    segment_alignment: str = field(
        default="independent",
        metadata={
            "help": "independent: each segment of a pair starts at its own random step; aligned: both start at the "
            "same step (docs/control.md, 'Preference segments').",
            "choices": ["independent", "aligned"],
        },
    )
    temperature_scale: float = field(
        default=0.1, metadata={"help": "Labeller temperature as a fraction of the std of segment returns."}
    )
    label_noise: float = field(default=0.0, metadata={"help": "Chance that a label is a coin flip."})
    eval_episodes: int = field(default=10, metadata={"help": "Episodes to measure the random and expert returns."})
    min_expert_fraction: float = field(
        default=0.1,
        metadata={
            "help": "Refuse (nothing written) a demonstrator whose return closes less than this fraction of the gap "
            "from the random policy's return to the env's reference return (aihf.control.references), or that is "
            "within noise of random; below 0.5 of that gap it only warns."
        },
    )
    accept_weak_demonstrator: bool = field(
        default=False,
        metadata={"help": "Write the data even when the demonstrator is refused (a warning instead)."},
    )
    torch_threads: int = field(default=1, metadata={"help": "torch.set_num_threads."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def validate(self, source: str = "the flags") -> CollectConfig:
        """Raise :class:`aihf.ConfigError` naming the first bad setting; returns self."""
        check_settings(self, source)
        for name in (
            "expert_steps",
            "batch_size",
            "train_freq",
            "snapshots",
            "num_demonstrations",
            "pool_episodes_per_snapshot",
            "num_preferences",
            "segment_length",
            "eval_episodes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} (from {source}) must be >= 1")
        if self.temperature_scale <= 0:
            raise ConfigError(f"temperature_scale={self.temperature_scale} (from {source}) must be > 0")
        if not 0 <= self.label_noise <= 1:
            raise ConfigError(f"label_noise={self.label_noise} (from {source}) must be between 0 and 1")
        if not 0 <= self.min_expert_fraction <= 1:
            raise ConfigError(f"min_expert_fraction={self.min_expert_fraction} (from {source}) must be between 0 and 1")
        return self


# The cpu preset (70k env steps a run); the long preset is the same settings for longer.
_CPU_TRAIN = dict(
    rounds=14,
    sac_steps_per_round=5000,
    learning_starts=1000,
    net_arch="64,64",
    batch_size=128,
    train_freq=2,
    reward_steps_per_round=20,
    sac_reward_normalization="buffer",
    eval_every=2,
    eval_episodes=5,
)
_CPU_COLLECT = dict(
    expert_steps=150_000,
    net_arch="64,64",
    batch_size=128,
    train_freq=2,
    snapshots=5,
    num_demonstrations=4,
    pool_episodes_per_snapshot=6,
    num_preferences=200,
)

PRESETS: dict[str, dict[str, dict]] = {
    "ci": {
        "train": dict(
            rounds=6,
            sac_steps_per_round=1000,
            learning_starts=500,
            net_arch="32,32",
            batch_size=64,
            reward_net_arch="32,32",
            reward_pretrain_steps=100,
            bc_steps=500,
            eval_episodes=2,
            final_eval_episodes=2,
        ),
        "collect": dict(
            expert_steps=5000,
            net_arch="32,32",
            batch_size=64,
            snapshots=3,
            num_demonstrations=2,
            pool_episodes_per_snapshot=2,
            num_preferences=100,
            eval_episodes=2,
        ),
    },
    "cpu": {"train": dict(_CPU_TRAIN), "collect": dict(_CPU_COLLECT)},
    # The cpu preset's SAC and reward settings, 300k env steps per run: how far the learned rewards lead
    # once SAC has converged on the true reward at this network size (the demonstrators' budget).
    "long": {"train": {**_CPU_TRAIN, "rounds": 60, "eval_every": 4}, "collect": dict(_CPU_COLLECT)},
    "paper": {
        "train": dict(
            rounds=200,
            sac_steps_per_round=5000,
            learning_starts=10_000,
            net_arch="256,256",
            batch_size=256,
            train_freq=1,
            reward_steps_per_round=1,
            reward_learning_rate=1e-4,
            eval_episodes=10,
        ),
        "collect": dict(
            expert_steps=1_000_000,
            net_arch="256,256",
            batch_size=256,
            train_freq=1,
            snapshots=8,
            num_demonstrations=16,
            pool_episodes_per_snapshot=16,
            num_preferences=5000,
        ),
    },
}


def with_preset(cls, preset: str | None, kind: str):
    """A ``cls`` whose defaults are the preset's (``kind`` is "train" or "collect")."""
    if preset is None:
        return cls()
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} (from the flags) is not one of {list(PRESETS)}")
    return dataclasses.replace(cls(), **PRESETS[preset][kind])


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (printed by :func:`main`, exit 2) and no prefix matching."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str):
        from ..commandline import one_line_error  # the wording (and "did you mean") of every aihf command

        raise ConfigError(one_line_error(message, self))
