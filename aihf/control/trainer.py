"""The AIHF loop for continuous control (method.md, "Instantiations" 1 and "Control specifics"),
and the baselines that are settings of it (preference-only RL, ML-IRL, two-stage) or beside it
(behaviour cloning).

Each round: ``sac_steps_per_round`` env steps of stable-baselines3 SAC on the current learned
reward (SAC is warm-started across rounds: one model, one replay buffer, rewards relabelled with
the current reward net each time a minibatch is drawn), then ``reward_steps_per_round`` Adam
steps on ``w_D * ML-IRL(demo states vs the policy's fresh states) + w_P * Bradley-Terry(pairs)``,
both from :mod:`aihf.losses`. By default (``survival_bonus``) SAC is trained on
``r_theta + bound >= 0`` so that ending an episode early (Hopper falling) is never a way to avoid
negative reward; for envs without early termination the shift changes no optimum and can be off.

Checkpoints (``output_dir/checkpoint``, written atomically after every round) hold no pickles:
tensors and optimiser states in ``state.pt`` (read back with ``torch.load(weights_only=True)``),
the replay buffer as ``buffer.npz`` (``allow_pickle=False``) and counters, RNG states and the
run's configuration in ``meta.json``. A run resumes only from its own ``output_dir`` and only
when the configuration matches.

Resuming is exact: a run killed at any moment and resumed from its last checkpoint ends with the
same metrics and weights as one never stopped. For that, every round's SAC phase starts a fresh
episode from an env reset seeded from ``(seed, round)``, in uninterrupted and resumed runs alike
(the episode in progress at a round's end is cut there; its last stored transition is not
terminal, so SAC bootstraps from it as from a time limit), and the checkpoint holds every RNG
state that the rest of the run draws from (torch, NumPy's global, Python's, the reward steps').

Non-finite values (a NaN or infinity in a reward loss term, a reward gradient, a learned reward
fed to SAC, or a SAC loss) stop the run with :class:`aihf.NonFiniteError`, one line naming the
round, the step and the term; the last checkpoint stays intact. With ``skip_nonfinite_steps``
a reward step with a non-finite loss term or gradient is dropped instead (counted in
``nonfinite/skipped_steps``, one line on stderr each); the other two always stop the run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import losses
from ..errors import ConfigError, NonFiniteError
from .config import ControlConfig, parse_sizes
from .data import Preferences, Trajectories, load_preferences, load_trajectories
from .reward import RewardNet, env_actions, segment_returns
from .sac_reward import learns_reward, survival_bonus_line, survival_bonus_record, terminations

__all__ = [
    "ControlTrainer",
    "reward_loss",
    "RewardBatch",
    "evaluate_policy",
    "normalized_score",
    "make_env",
    "load_policy",
]


def make_env(env_id: str):
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except (gym.error.Error, ImportError, AttributeError, ValueError, TypeError) as e:
        # "module:Env-v0" ids import a module; a missing one must not become a traceback
        raise ConfigError(f"env_id={env_id!r}: {' '.join(str(e).split())}") from None
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(f"env_id={env_id!r}: needs Box observation and action spaces")
    return env


def replay_buffer_bytes(config: ControlConfig, observation_space, action_space) -> int:
    """Bytes of SAC's replay buffer once full: ``min(buffer_size, rounds * sac_steps_per_round + 1)``
    transitions of observation and next observation (the space's dtype), action (float32 for a
    float64 space, as SB3 stores it) and reward, done and time-out flags (float32)."""
    rows = min(config.buffer_size, config.rounds * config.sac_steps_per_round + 1)
    obs = int(np.prod(observation_space.shape)) * np.dtype(observation_space.dtype).itemsize
    act = int(np.prod(action_space.shape)) * min(4, np.dtype(action_space.dtype).itemsize)
    return rows * (2 * obs + act + 3 * 4)


def _available_memory() -> int | None:
    """Bytes of memory available now (psutil, else Linux's MemAvailable); None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def check_memory(config: ControlConfig, observation_space, action_space, source: str = "the flags") -> None:
    """Raise :class:`aihf.ConfigError` at start-up when the full replay buffer cannot fit in the
    memory available now (SB3 only warns, and the run would be killed hours later)."""
    need, free = replay_buffer_bytes(config, observation_space, action_space), _available_memory()
    if free is not None and need > free:
        raise ConfigError(
            f"buffer_size={config.buffer_size} (from {source}): the replay buffer would need {need / 2**30:.1f} GB "
            f"of memory ({observation_space.shape} observations), {free / 2**30:.1f} GB available; lower buffer_size"
        )


def evaluate_policy(act, env_id: str, episodes: int, seed: int) -> np.ndarray:
    """Ground-truth returns of ``episodes`` episodes of ``act(obs) -> action``, shape ``(episodes,)``."""
    env = make_env(env_id)
    returns = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            returns[i] += float(reward)
            done = terminated or truncated
    env.close()
    return returns


def normalized_score(returns, random_return: float | None, expert_return: float | None):
    """``(R - R_random) / (R_expert - R_random)`` (method.md, "Control specifics"); NaN without references."""
    if random_return is None or expert_return is None or expert_return == random_return:
        return float("nan")
    return float((np.mean(returns) - random_return) / (expert_return - random_return))


def json_safe(value):
    """``value`` with NaN and infinities as ``None``: valid JSON (``null``) for jq and JavaScript, which
    reject the bare ``NaN`` Python's json writes. A normalised return is NaN when the data has no
    reference returns."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@dataclass
class RewardBatch:
    """Tensors for one reward step. Demo/sample sides: ``(B, obs_dim)``/``(B, act_dim)``; preference
    sides: ``(P, L, obs_dim)``/``(P, L, act_dim)`` with valid lengths ``(P,)``. Absent parts are None."""

    demo_obs: torch.Tensor | None = None
    demo_act: torch.Tensor | None = None
    sample_obs: torch.Tensor | None = None
    sample_act: torch.Tensor | None = None
    chosen_obs: torch.Tensor | None = None
    chosen_act: torch.Tensor | None = None
    chosen_len: torch.Tensor | None = None
    rejected_obs: torch.Tensor | None = None
    rejected_act: torch.Tensor | None = None
    rejected_len: torch.Tensor | None = None


def reward_loss(net: RewardNet, batch: RewardBatch, demo_weight: float, pref_weight: float, grad_norms=False):
    """The reward's loss, method.md (U) as in "Instantiations" 1(c):
    ``w_D * ML-IRL-linear(r(demo states), r(policy states)) + w_P * BT(R(chosen), R(rejected))``
    with ``R`` a segment's summed reward. Returns ``(loss, logs)``.

    With ``grad_norms`` the logs also hold ``reward/grad_norm_demo`` and ``reward/grad_norm_pref``:
    the L2 norm over the net's parameters of each weighted term's gradient, ``||grad(w_D * demo)||``
    and ``||grad(w_P * pref)||`` (so doubling a weight doubles its norm), from two extra backward
    passes; docs/control.md, "Balance of the two terms".
    """
    demo_term = pref_term = None
    logs: dict[str, float] = {}
    if demo_weight > 0:
        irl = losses.ml_irl_linear_loss(net(batch.demo_obs, batch.demo_act), net(batch.sample_obs, batch.sample_act))
        demo_term = irl.loss
        logs.update(
            {
                "demo/reward_expert": irl.chosen_rewards.mean().item(),
                "demo/reward_policy": irl.rejected_rewards.mean().item(),
            }
        )
    if pref_weight > 0:
        chosen = segment_returns(net(batch.chosen_obs, batch.chosen_act), batch.chosen_len)
        rejected = segment_returns(net(batch.rejected_obs, batch.rejected_act), batch.rejected_len)
        bt = losses.bradley_terry_loss(chosen, rejected)
        pref_term = bt.loss
        logs.update({"loss/pref": bt.loss.item(), "rewards/accuracies": (bt.margins > 0).float().mean().item()})
    loss = losses.aihf_loss(demo_term, pref_term, demo_weight, pref_weight)
    if grad_norms:
        params = [p for p in net.parameters() if p.requires_grad]
        for name, term, weight in (("demo", demo_term, demo_weight), ("pref", pref_term, pref_weight)):
            if term is not None:
                grads = torch.autograd.grad(weight * term, params, retain_graph=True, allow_unused=True)
                norm = torch.sqrt(sum((g.detach() ** 2).sum() for g in grads if g is not None))
                logs[f"reward/grad_norm_{name}"] = float(norm)
    if demo_term is not None:
        logs["loss/demo"] = demo_term.item()
    logs["loss"] = loss.item()
    return loss, logs


def _replay_buffer_class():
    from stable_baselines3.common.buffers import ReplayBuffer

    class RelabelledReplayBuffer(ReplayBuffer):
        """SB3's buffer whose minibatch rewards come from ``reward_fn(obs, actions)`` when set.

        Relabelling at sampling time keeps every reward current with the latest reward net for the
        cost of one small MLP pass per minibatch; the stored env rewards stay untouched.
        """

        reward_fn = None

        def _get_samples(self, batch_inds, env=None):
            samples = super()._get_samples(batch_inds, env)
            if self.reward_fn is None:
                return samples
            with torch.no_grad():
                rewards = self.reward_fn(samples.observations, samples.actions).reshape(-1, 1)
            return samples._replace(rewards=rewards.to(samples.rewards.dtype))

    return RelabelledReplayBuffer


_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
# Settings that may change between a run and its resumption.
_RESUMABLE = {
    "rounds",
    "resume",
    "progress",
    "torch_threads",
    "eval_every",
    "eval_episodes",
    "output_dir",
    "result_file",
    "skip_nonfinite_steps",
    "final_eval_episodes",
}
_SAC_LOSSES = ("train/critic_loss", "train/actor_loss", "train/ent_coef_loss")


def _episode_seed(seed: int, round_: int) -> int:
    """The seed of the env reset that starts round ``round_``'s SAC phase (0-based round)."""
    return int(np.random.SeedSequence([seed, round_]).generate_state(1)[0])


def _first_nonfinite(value) -> str:
    """``nan``, ``inf`` or ``-inf``: the first non-finite entry of ``value``."""
    t = torch.as_tensor(value).detach().float().flatten()
    bad = t[~torch.isfinite(t)]
    return str(bad[0].item()) if bad.numel() else "finite"


class ControlTrainer:
    """One run of ``config.method`` on ``config.env_id``; ``train()`` returns the result dict that
    is also written to ``output_dir/result.json``.

    Raises :class:`aihf.DataError` for bad data files and :class:`aihf.ConfigError` for bad
    settings, both before anything is written.
    """

    def __init__(self, config: ControlConfig, source: str = "the flags"):
        self.config = config.validate(source)
        c = config
        torch.set_num_threads(c.torch_threads)
        self.env = make_env(c.env_id)
        obs_space, act_space = self.env.observation_space, self.env.action_space
        if c.method != "bc":  # bc has no replay buffer
            check_memory(c, obs_space, act_space, source)
        self.demos: Trajectories | None = None
        if c.demonstrations is not None and c.method != "pref_rl":
            self.demos = load_trajectories(c.demonstrations, obs_space, act_space)
            if c.num_demonstrations is not None:
                if not 1 <= c.num_demonstrations <= self.demos.num_episodes:
                    raise ConfigError(
                        f"num_demonstrations={c.num_demonstrations} (from {source}) must be between 1 and the "
                        f"{self.demos.num_episodes} episodes in {c.demonstrations}"
                    )
                self.demos = self.demos.episodes(range(c.num_demonstrations))
        self.demo_weight, self.pref_weight = c.effective_weights
        self.prefs: Preferences | None = None
        if c.preferences is not None and c.num_preferences != 0 and learns_reward(c) and c.method != "ml_irl":
            self.prefs = load_preferences(c.preferences, obs_space, act_space)
            if c.num_preferences is not None:
                if c.num_preferences > len(self.prefs):
                    raise ConfigError(
                        f"num_preferences={c.num_preferences} (from {source}) exceeds the {len(self.prefs)} pairs "
                        f"in {c.preferences}"
                    )
                self.prefs = self.prefs.subset(c.num_preferences)
        if self.prefs is None and c.method in ("aihf",):
            self.pref_weight = 0.0  # AIHF with no preferences is ML-IRL (method.md, "Reductions")
        if self.demos is None:
            self.demo_weight = 0.0
        if self.demo_weight == 0 and self.pref_weight == 0 and learns_reward(c):
            raise ConfigError(f"method={c.method} (from {source}) has no data to learn a reward from")
        self.random_return, self.expert_return = self._reference_returns()
        self.rng = np.random.default_rng(c.seed)
        self.nonfinite_skipped = 0  # reward steps dropped for a non-finite value (skip_nonfinite_steps)
        self.round = 0  # rounds finished before the current one (0-based index of the current round)
        self.checkpoint_dir = os.path.join(c.output_dir, "checkpoint")
        # Called with one line (the survival bonus) once the start-up checks have passed; `aihf control
        # train` prints it on stderr.
        self.announce = None

    def _reference_returns(self):
        c = self.config
        path = c.reference_returns
        if path is None and c.demonstrations is not None:
            guess = os.path.join(os.path.dirname(os.path.abspath(c.demonstrations)), "meta.json")
            path = guess if os.path.isfile(guess) else None
        if path is None:
            return None, None
        try:
            with open(path) as f:
                meta = json.load(f)
            return float(meta["random_return"]), float(meta["expert_return"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"reference_returns={path!r}: needs random_return and expert_return ({e})") from None

    # ----------------------------------------------------------------------------------------
    def _build(self):
        from stable_baselines3 import SAC

        c = self.config
        obs_dim = int(np.prod(self.env.observation_space.shape))
        act_dim = int(np.prod(self.env.action_space.shape))
        torch.manual_seed(c.seed)  # the reward net is built before SAC seeds the global RNGs
        self.reward_net = RewardNet(
            obs_dim, act_dim, parse_sizes(c.reward_net_arch), c.reward_input == "state_action", c.reward_bound
        )
        space = self.env.action_space
        self.action_low = torch.as_tensor(space.low, dtype=torch.float32).reshape(-1)
        self.action_high = torch.as_tensor(space.high, dtype=torch.float32).reshape(-1)
        obs_rows, act_rows = [], []
        if self.demos is not None:
            obs_rows.append(self.demos.observations)
            act_rows.append(self.demos.actions)
        if self.prefs is not None:
            for side in ("chosen", "rejected"):
                mask = (
                    np.arange(self.prefs.chosen_observations.shape[1])[None]
                    < getattr(self.prefs, f"{side}_lengths")[:, None]
                )
                obs_rows.append(getattr(self.prefs, f"{side}_observations")[mask])
                act_rows.append(getattr(self.prefs, f"{side}_actions")[mask])
        self.data_obs, self.data_act = np.concatenate(obs_rows), np.concatenate(act_rows)
        self.reward_net.set_normalization(self.data_obs, self.data_act)
        self.reward_optimizer = torch.optim.Adam(self.reward_net.parameters(), lr=c.reward_learning_rate)
        self.model = SAC(
            "MlpPolicy",
            self.env,
            learning_rate=c.sac_learning_rate,
            buffer_size=min(c.buffer_size, c.rounds * c.sac_steps_per_round + 1),
            learning_starts=c.learning_starts,
            batch_size=c.batch_size,
            tau=c.tau,
            gamma=c.gamma,
            train_freq=c.train_freq,
            gradient_steps=c.gradient_steps,
            replay_buffer_class=_replay_buffer_class(),
            policy_kwargs={"net_arch": parse_sizes(c.net_arch)},
            seed=c.seed,
            device="cpu",
            verbose=0,
        )
        # SAC sees scale * (r + offset) / divisor; _fit_sac_reward_normalization may change the two.
        self.sac_reward_offset, self.sac_reward_divisor = (self.reward_net.bound if c.survival_bonus else 0.0), 1.0

        def sac_reward(obs, act):
            r = self.buffer_reward(obs, act)
            rewards = c.sac_reward_scale * (r + self.sac_reward_offset) / self.sac_reward_divisor
            if not bool(torch.isfinite(rewards).all()):
                raise self._nonfinite_error(
                    f"the learned reward fed to SAC is {_first_nonfinite(rewards)}", "SAC minibatch"
                )
            return rewards

        self.model.replay_buffer.reward_fn = sac_reward
        sac_train = self.model.train

        def checked_sac_train(*args, **kwargs):
            # SB3 records the mean of each loss over the call's gradient steps just before returning.
            try:
                sac_train(*args, **kwargs)
            except ValueError as e:
                raise self._nonfinite_distribution(e, "SAC update") from None
            values = self.model.logger.name_to_value
            for term in _SAC_LOSSES:
                if term in values and not math.isfinite(values[term]):
                    raise self._nonfinite_error(f"SAC's {term[len('train/') :]} is {values[term]}", "SAC update")

        self.model.train = checked_sac_train

    def buffer_env_actions(self, actions) -> torch.Tensor:
        """Replay-buffer actions (SAC's [-1, 1] scale) in the env's units, float32 ``(..., act_dim)``:
        the one scale at which actions meet the reward net (docs/control.md, "Action units")."""
        return env_actions(torch.as_tensor(actions, dtype=torch.float32), self.action_low, self.action_high)

    def buffer_reward(self, observations, actions) -> torch.Tensor:
        """The learned reward of replay-buffer transitions (actions as stored, in SAC's scale); 0 for
        ``null_constant``."""
        if self.config.method == "null_constant":
            return torch.zeros(len(observations))
        return self.reward_net(torch.as_tensor(observations, dtype=torch.float32), self.buffer_env_actions(actions))

    def _nonfinite_distribution(self, error: ValueError, step: str) -> Exception:
        """torch's check of the actor's Normal(mean, std) is where non-finite SAC weights or inputs
        first show; anything else passes through."""
        if "invalid values" not in str(error):
            return error
        return self._nonfinite_error("SAC's action distribution has non-finite parameters", step)

    def _where(self, step: str) -> str:
        if step.startswith("reward pretraining"):
            return step
        return f"round {self.round + 1}, {step}, env step {int(self.model.num_timesteps)}"

    def _nonfinite_error(self, what: str, step: str) -> NonFiniteError:
        kept = (
            f"the last checkpoint, {self.checkpoint_dir}, is intact"
            if os.path.isdir(self.checkpoint_dir)
            else "no checkpoint was written yet"
        )
        return NonFiniteError(f"{self._where(step)}: {what}; run stopped ({kept})")

    # ----------------------------------------------------------------------------------------
    def _reward_batch(self, demo_weight: float, pref_weight: float) -> RewardBatch:
        c, rng, batch = self.config, self.rng, RewardBatch()
        n = c.reward_batch_size
        if demo_weight > 0:
            idx = rng.integers(0, len(self.demos.observations), n)
            batch.demo_obs = torch.as_tensor(self.demos.observations[idx])
            batch.demo_act = torch.as_tensor(self.demos.actions[idx])
            buf = self.model.replay_buffer
            size = buf.buffer_size if buf.full else buf.pos
            recent = min(c.policy_sample_steps or c.sac_steps_per_round, size)
            idx = (buf.pos - 1 - rng.integers(0, recent, n)) % buf.buffer_size
            batch.sample_obs = torch.as_tensor(buf.observations[idx, 0], dtype=torch.float32)
            batch.sample_act = self.buffer_env_actions(buf.actions[idx, 0])
        if pref_weight > 0:
            p = self.prefs
            idx = rng.integers(0, len(p), n)
            batch.chosen_obs = torch.as_tensor(p.chosen_observations[idx])
            batch.chosen_act = torch.as_tensor(p.chosen_actions[idx])
            batch.chosen_len = torch.as_tensor(p.chosen_lengths[idx])
            batch.rejected_obs = torch.as_tensor(p.rejected_observations[idx])
            batch.rejected_act = torch.as_tensor(p.rejected_actions[idx])
            batch.rejected_len = torch.as_tensor(p.rejected_lengths[idx])
        return batch

    def _reward_steps(self, steps: int, demo_weight: float, pref_weight: float, label: str = "reward step") -> dict:
        logs: dict = {}
        for i in range(steps):
            batch = self._reward_batch(demo_weight, pref_weight)
            # The logs are the last step's: only it pays for the per-term gradient norms.
            last = i == steps - 1
            loss, step_logs = reward_loss(self.reward_net, batch, demo_weight, pref_weight, grad_norms=last)
            self.reward_optimizer.zero_grad()
            problem = self._nonfinite_reward_step(step_logs, loss)
            if problem is not None:
                self.reward_optimizer.zero_grad()
                self._skip_or_stop(f"{label} {i + 1}", problem)
                continue
            self.reward_optimizer.step()
            logs = step_logs
        if self.nonfinite_skipped:
            logs = {**logs, "nonfinite/skipped_steps": self.nonfinite_skipped}
        return logs

    def _nonfinite_reward_step(self, logs: dict, loss: torch.Tensor) -> str | None:
        """What is non-finite in this reward step (a loss term, else a gradient after backward), or None."""
        for name, value in logs.items():
            if name.startswith("loss") and not math.isfinite(value):
                return f"{name} is {value}"
        loss.backward()
        for name, p in self.reward_net.named_parameters():
            if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
                return f"the gradient of reward parameter {name} is {_first_nonfinite(p.grad)}"
        return None

    def _skip_or_stop(self, step: str, problem: str) -> None:
        if not self.config.skip_nonfinite_steps:
            raise self._nonfinite_error(f"{problem}; set skip_nonfinite_steps=true to skip such steps instead", step)
        self.nonfinite_skipped += 1
        print(
            f"aihf: {self._where(step)}: {problem}: update skipped (skip_nonfinite_steps; "
            f"{self.nonfinite_skipped} so far)",
            file=sys.stderr,
            flush=True,
        )

    def _fit_sac_reward_normalization(self) -> dict:
        """``sac_reward_normalization="buffer"``: set the reward SAC sees to ``(r - mean) / std`` (with
        ``survival_bonus``: ``(r - min) / std >= 0``) over evenly spaced replay-buffer states, or the
        data's states while the buffer is empty. Draws no random numbers, so a resumed run recomputes
        the values the stopped one used. Returns logs."""
        c = self.config
        if c.sac_reward_normalization == "none" or c.method == "null_constant":  # a constant has no spread
            return {}
        buf = self.model.replay_buffer
        size = buf.buffer_size if buf.full else buf.pos
        with torch.no_grad():
            if size >= 2:
                idx = np.linspace(0, size - 1, min(size, c.normalization_samples)).astype(np.int64)
                r = self.buffer_reward(torch.as_tensor(buf.observations[idx, 0]), torch.as_tensor(buf.actions[idx, 0]))
            else:
                r = self.reward_net(torch.as_tensor(self.data_obs), torch.as_tensor(self.data_act))
        # The floor only guards against dividing by zero; a reward that barely moved is meant to be amplified.
        self.sac_reward_divisor = max(r.std().item(), 1e-3)
        self.sac_reward_offset = -(r.min().item() if c.survival_bonus else r.mean().item())
        return {"sac_reward/mean": r.mean().item(), "sac_reward/std": r.std().item()}

    def _evaluate(self, round_: int) -> dict:
        c = self.config
        episodes = c.final_eval_episodes if round_ == c.rounds else c.eval_episodes
        returns = evaluate_policy(
            lambda o: self.model.predict(o, deterministic=True)[0], c.env_id, episodes, c.seed + 1_000_000
        )
        return {
            "round": round_,
            "env_steps": int(self.model.num_timesteps),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "normalized_return": normalized_score(returns, self.random_return, self.expert_return),
            "episodes": episodes,
        }

    # ----------------------------------------------------------------------------------------
    def train(self) -> dict:
        c = self.config
        if c.resume:
            self._check_previous_run()
        if c.method == "bc":
            return self._finish(*self._behaviour_cloning())
        from tqdm.auto import tqdm

        self._build()
        self._check_disk_space()
        start_round, history, timing = 0, [], {"sac_s": 0.0, "reward_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0}
        ckpt = self.checkpoint_dir
        if c.resume:
            _recover_checkpoint(ckpt)
        if c.resume and os.path.isdir(ckpt):
            start_round, history, timing = self._load_checkpoint(ckpt)
        elif c.method in ("pref_rl", "two_stage") and self.prefs is not None:
            t0 = time.perf_counter()
            self._reward_steps(c.reward_pretrain_steps, 0.0, 1.0, label="reward pretraining step")
            timing["reward_s"] += time.perf_counter() - t0
        self._fit_sac_reward_normalization()
        if self.announce is not None:
            self.announce(survival_bonus_line(c))
        bar = tqdm(total=c.rounds, initial=start_round, desc=f"{c.method} {c.env_id}", disable=not c.progress)
        try:
            for r in range(start_round, c.rounds):
                self.round = r
                t0 = time.perf_counter()
                self._start_episode(r)
                try:
                    self.model.learn(c.sac_steps_per_round, reset_num_timesteps=False, progress_bar=False)
                except ValueError as e:  # acting on the env, outside an update
                    raise self._nonfinite_distribution(e, "SAC rollout") from None
                t1 = time.perf_counter()
                steps = c.reward_steps_per_round if learns_reward(c) else 0  # a null reward never trains
                logs = self._reward_steps(steps, self.demo_weight, self.pref_weight)
                logs.update(self._fit_sac_reward_normalization())
                t2 = time.perf_counter()
                if (r + 1) % c.eval_every == 0 or r + 1 == c.rounds:
                    history.append({**self._evaluate(r + 1), **logs})
                    bar.set_postfix(ret=f"{history[-1]['return_mean']:.0f}")
                t3 = time.perf_counter()
                for key, seconds in (("sac_s", t1 - t0), ("reward_s", t2 - t1), ("eval_s", t3 - t2)):
                    timing[key] = timing.get(key, 0.0) + seconds
                self._save_checkpoint(ckpt, r + 1, history, timing)
                timing["checkpoint_s"] = timing.get("checkpoint_s", 0.0) + time.perf_counter() - t3
                bar.update(1)
        finally:
            bar.close()
        return self._finish(history, timing)

    def _start_episode(self, round_: int) -> None:
        """Start round ``round_``'s SAC phase (0-based) with an env reset seeded from (seed, round), so
        that a resumed run collects exactly what an uninterrupted one does. The episode in progress,
        if any, is cut here: its last stored transition is not terminal, so SAC bootstraps from it
        as it does after a time limit. The action space (SAC's random actions before
        ``learning_starts``) is reseeded too."""
        model, seed = self.model, _episode_seed(self.config.seed, round_)
        model.action_space.seed(seed)
        model.env.seed(seed)
        model._last_obs = model.env.reset()
        model._last_episode_starts = np.ones((model.env.num_envs,), dtype=bool)

    def _finish(self, history: list, timing: dict) -> dict:
        c = self.config
        final = history[-1] if history else {}
        env_steps = final.get("env_steps", 0)
        # Training throughput: SAC (with relabelling), reward steps and checkpoints; evaluation excluded.
        total_s = sum(timing.get(k, 0.0) for k in ("sac_s", "reward_s", "checkpoint_s"))
        result = {
            "env_id": c.env_id,
            "method": c.method,
            "seed": c.seed,
            "demo_weight": self.demo_weight,
            "pref_weight": self.pref_weight,
            "num_demonstrations": self.demos.num_episodes if self.demos is not None else 0,
            "num_preferences": len(self.prefs) if self.prefs is not None else 0,
            "random_return": self.random_return,
            "expert_return": self.expert_return,
            "survival_bonus": survival_bonus_record(
                c, terminations(self.model.replay_buffer) if c.method != "bc" else None
            ),
            "final": final,
            "history": history,
            "timing": {**timing, "env_steps_per_s": env_steps / total_s if total_s > 0 else None},
            "config": dataclasses.asdict(c),
        }
        os.makedirs(c.output_dir, exist_ok=True)
        self.save_policy()
        result = json_safe(result)
        tmp = os.path.join(c.output_dir, "result.json.tmp")
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
        os.replace(tmp, os.path.join(c.output_dir, "result.json"))
        if c.result_file:
            os.makedirs(os.path.dirname(os.path.abspath(c.result_file)), exist_ok=True)
            with open(c.result_file + ".tmp", "w") as f:
                json.dump(result, f, indent=1)
            os.replace(c.result_file + ".tmp", c.result_file)
        return result

    # ----------------------------------------------------------------------------------------
    def _check_disk_space(self) -> None:
        """Before the first save: ``output_dir``'s disk must hold two checkpoints (the one being
        written and the last complete one), each the full replay buffer plus SAC's and the reward's
        weights with their Adam moments; else :class:`aihf.TrainingError` (exit status 3)."""
        from ..llm.guards import check_disk_space

        weights = sum(p.numel() * 4 for p in [*self.model.policy.parameters(), *self.reward_net.parameters()])
        buffer = replay_buffer_bytes(self.config, self.env.observation_space, self.env.action_space)
        # A resumed run's last checkpoint is on disk already: the next save needs room for one more.
        check_disk_space(
            self.config.output_dir, buffer + 3 * weights, count=1 if os.path.isdir(self.checkpoint_dir) else 2
        )

    def _save_checkpoint(self, path: str, round_: int, history: list, timing: dict) -> None:
        model, buf = self.model, self.model.replay_buffer
        tmp = path + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        state = {
            "policy": model.policy.state_dict(),
            "actor_optimizer": model.actor.optimizer.state_dict(),
            "critic_optimizer": model.critic.optimizer.state_dict(),
            "reward": self.reward_net.state_dict(),
            "reward_optimizer": self.reward_optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        if model.ent_coef_optimizer is not None:
            state["log_ent_coef"] = model.log_ent_coef.detach().clone()
            state["ent_coef_optimizer"] = model.ent_coef_optimizer.state_dict()
        torch.save(state, os.path.join(tmp, "state.pt"))
        size = buf.buffer_size if buf.full else buf.pos
        np.savez(os.path.join(tmp, "buffer.npz"), **{k: getattr(buf, k)[:size] for k in _BUFFER_ARRAYS})
        np_state = np.random.get_state()
        meta = {
            "round": round_,
            "num_timesteps": int(model.num_timesteps),
            "n_updates": int(model._n_updates),
            "buffer_pos": int(buf.pos),
            "buffer_full": bool(buf.full),
            "rng": self.rng.bit_generator.state,
            "np_global_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python_rng": random.getstate(),
            "nonfinite_skipped": self.nonfinite_skipped,
            "history": history,
            "timing": timing,
            "config": dataclasses.asdict(self.config),
        }
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f)
        old = path + ".old"
        if os.path.isdir(path):
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)

    def _load_checkpoint(self, path: str):
        try:
            with open(os.path.join(path, "meta.json")) as f:
                meta = json.load(f)
            for key in ("round", "num_timesteps", "n_updates", "buffer_pos"):
                if isinstance(meta[key], bool) or not isinstance(meta[key], int) or meta[key] < 0:
                    raise ValueError(f"'{key}' must be an integer >= 0, got {meta[key]!r}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: not a checkpoint this version can resume ({e}); use a new output_dir") from None
        self._refuse_other_settings(path, meta["config"])
        model, buf = self.model, self.model.replay_buffer
        try:
            state = torch.load(os.path.join(path, "state.pt"), weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain containers
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{path}/state.pt: refused to load ({first})") from None
        model.policy.load_state_dict(state["policy"])
        model.actor.optimizer.load_state_dict(state["actor_optimizer"])
        model.critic.optimizer.load_state_dict(state["critic_optimizer"])
        if "log_ent_coef" in state:
            with torch.no_grad():
                model.log_ent_coef.copy_(state["log_ent_coef"])
            model.ent_coef_optimizer.load_state_dict(state["ent_coef_optimizer"])
        self.reward_net.load_state_dict(state["reward"])
        self.reward_optimizer.load_state_dict(state["reward_optimizer"])
        torch.set_rng_state(state["torch_rng"])
        try:
            with np.load(os.path.join(path, "buffer.npz"), allow_pickle=False) as arrays:
                for k in _BUFFER_ARRAYS:
                    getattr(buf, k)[: len(arrays[k])] = arrays[k]
        except ValueError:  # numpy refuses an object array (it would unpickle); its message suggests allowing it
            raise ConfigError(f"{path}/buffer.npz: refused to load (it holds a pickled object array)") from None
        except (OSError, KeyError) as e:
            raise ConfigError(f"{path}/buffer.npz: refused to load ({e})") from None
        buf.pos, buf.full = meta["buffer_pos"], meta["buffer_full"]
        model.num_timesteps, model._n_updates = meta["num_timesteps"], meta["n_updates"]
        self.rng.bit_generator.state = meta["rng"]
        g = meta["np_global_rng"]
        np.random.set_state((g[0], np.asarray(g[1], dtype=np.uint32), *g[2:]))
        if "python_rng" in meta:
            version, internal, gauss = meta["python_rng"]
            random.setstate((version, tuple(internal), gauss))
        self.nonfinite_skipped = int(meta.get("nonfinite_skipped", 0))
        self.round = meta["round"]
        return meta["round"], meta["history"], meta["timing"]

    def _refuse_other_settings(self, path: str, config: dict) -> None:
        """Raise ``ConfigError`` naming the settings in which ``config`` (a previous run's, read
        from ``path``) differs from this run's, resumable ones aside."""
        mine = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in _RESUMABLE}
        # A setting added after the file was written had its default then.
        defaults = dataclasses.asdict(ControlConfig())
        theirs = {k: config.get(k, defaults[k]) for k in mine}
        changed = sorted(k for k in mine if mine[k] != theirs[k])
        if changed:
            raise ConfigError(
                f"{path} was written with different settings ({', '.join(changed)}); use a new output_dir or "
                "--resume false"
            )

    def _check_previous_run(self) -> None:
        """Before anything is written: refuse an ``output_dir`` that holds another run. A SAC run's
        checkpoint is checked when it is loaded; this covers BC (which has no checkpoint, so it would
        overwrite any run's ``result.json`` and policy) and a finished BC run found by a SAC method."""
        c = self.config
        ckpt = self.checkpoint_dir
        if c.method != "bc":
            _recover_checkpoint(ckpt)
            if os.path.isdir(ckpt):
                return  # _load_checkpoint compares its settings
        for path in (
            os.path.join(ckpt, "meta.json"),
            os.path.join(ckpt + ".old", "meta.json"),
            os.path.join(c.output_dir, "result.json"),
        ):
            if not os.path.exists(path):
                continue
            try:
                with open(path) as f:
                    config = json.load(f)["config"]
                if not isinstance(config, dict):
                    raise TypeError("'config' is not a mapping")
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{path}: not a run this version can read ({e}); use a new output_dir") from None
            self._refuse_other_settings(path, config)

    # ----------------------------------------------------------------------------------------
    def _behaviour_cloning(self):
        """Behaviour cloning: a ``net_arch`` MLP with a tanh output scaled to the action bounds,
        regressed on the demonstrations' actions (MSE, Adam), evaluated once at the end."""
        c = self.config
        torch.manual_seed(c.seed)
        obs = torch.as_tensor(self.demos.observations)
        act = torch.as_tensor(self.demos.actions)
        self.bc_policy = BCPolicy(self.env.observation_space, self.env.action_space, parse_sizes(c.net_arch))
        self.bc_policy.set_normalization(obs)
        opt = torch.optim.Adam(self.bc_policy.parameters(), lr=c.bc_learning_rate)
        t0 = time.perf_counter()
        loss = torch.zeros(())
        for _ in range(c.bc_steps):
            idx = torch.as_tensor(self.rng.integers(0, len(obs), min(c.batch_size, len(obs))))
            loss = ((self.bc_policy(obs[idx]) - act[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s = time.perf_counter() - t0
        # One evaluation: BC has no env-step learning curve.
        returns = evaluate_policy(self.bc_policy.act, c.env_id, c.final_eval_episodes, c.seed + 1_000_000)
        history = [
            {
                "round": 1,
                "bc_steps": c.bc_steps,
                "env_steps": 0,
                "loss": loss.item(),
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "normalized_return": normalized_score(returns, self.random_return, self.expert_return),
                "episodes": c.final_eval_episodes,
            }
        ]
        return history, {"sac_s": 0.0, "reward_s": train_s, "eval_s": time.perf_counter() - t0 - train_s}

    def save_policy(self) -> str:
        """Write the trained policy to ``output_dir/policy.safetensors`` (SAC actor or BC net)."""
        from safetensors.torch import save_file

        module = self.bc_policy if self.config.method == "bc" else self.model.actor
        path = os.path.join(self.config.output_dir, "policy.safetensors")
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, path + ".tmp")
        os.replace(path + ".tmp", path)
        return path


def load_policy(config: ControlConfig, path: str):
    """The policy file :meth:`ControlTrainer.save_policy` wrote for a run of ``config``, as
    ``act(obs) -> action`` (deterministic). Needs the env and the network sizes only, not the run's
    data, so a run folder evaluates after its data has moved. Raises ``OSError``, ``RuntimeError`` or
    safetensors' error for a file that is not such a policy."""
    from safetensors.torch import load_file

    weights = load_file(path)
    env = make_env(config.env_id)
    if config.method == "bc":
        policy = BCPolicy(env.observation_space, env.action_space, parse_sizes(config.net_arch))
        policy.load_state_dict(weights)
        return policy.act
    from stable_baselines3 import SAC

    # Only the actor is used: a one-transition buffer instead of the run's.
    model = SAC("MlpPolicy", env, buffer_size=1, policy_kwargs={"net_arch": parse_sizes(config.net_arch)}, device="cpu")
    model.actor.load_state_dict(weights)
    return lambda o: model.predict(o, deterministic=True)[0]


def _recover_checkpoint(path: str) -> None:
    """A run killed between the two renames of ``_save_checkpoint`` left its last complete
    checkpoint at ``path + ".old"`` (and the next one, perhaps incomplete, at ``path + ".tmp"``,
    which the next save replaces): put the complete one back."""
    if not os.path.isdir(path) and os.path.isdir(path + ".old"):
        os.replace(path + ".old", path)


class BCPolicy(nn.Module):
    """Deterministic MLP policy ``obs -> action``: standardised input, tanh output scaled to the bounds."""

    def __init__(self, observation_space, action_space, hidden):
        super().__init__()
        obs_dim, act_dim = int(np.prod(observation_space.shape)), int(np.prod(action_space.shape))
        sizes = [obs_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], act_dim), nn.Tanh())
        self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1))
        self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1))
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    def set_normalization(self, obs: torch.Tensor) -> None:
        self.mean.copy_(obs.mean(0))
        self.std.copy_(obs.std(0).clamp_min(1e-3) if len(obs) > 1 else torch.ones_like(self.std))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.low + (self.net((obs - self.mean) / self.std) + 1) * (self.high - self.low) / 2

    def act(self, obs) -> np.ndarray:
        with torch.no_grad():
            return self.forward(torch.as_tensor(np.asarray(obs, np.float32).reshape(-1))).numpy()
