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
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import losses
from ..errors import ConfigError
from .config import ControlConfig, parse_sizes
from .data import Preferences, Trajectories, load_preferences, load_trajectories
from .reward import RewardNet, segment_returns

__all__ = ["ControlTrainer", "reward_loss", "RewardBatch", "evaluate_policy", "normalized_score", "make_env"]


def make_env(env_id: str):
    import gymnasium as gym

    try:
        env = gym.make(env_id)
    except gym.error.Error as e:
        raise ConfigError(f"env_id={env_id!r}: {e}") from None
    if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(env.observation_space, gym.spaces.Box):
        raise ConfigError(f"env_id={env_id!r}: needs Box observation and action spaces")
    return env


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


def reward_loss(net: RewardNet, batch: RewardBatch, demo_weight: float, pref_weight: float):
    """The reward's loss, method.md (U) as in "Instantiations" 1(c):
    ``w_D * ML-IRL-linear(r(demo states), r(policy states)) + w_P * BT(R(chosen), R(rejected))``
    with ``R`` a segment's summed reward. Returns ``(loss, logs)``.
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
}


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
        if c.preferences is not None and c.num_preferences != 0 and c.method != "ml_irl" and c.method != "bc":
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
        if self.demo_weight == 0 and self.pref_weight == 0 and c.method != "bc":
            raise ConfigError(f"method={c.method} (from {source}) has no data to learn a reward from")
        self.random_return, self.expert_return = self._reference_returns()
        self.rng = np.random.default_rng(c.seed)

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
        self.reward_net = RewardNet(
            obs_dim, act_dim, parse_sizes(c.reward_net_arch), c.reward_input == "state_action", c.reward_bound
        )
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
            r = self.reward_net(obs.float(), act.float())
            return c.sac_reward_scale * (r + self.sac_reward_offset) / self.sac_reward_divisor

        self.model.replay_buffer.reward_fn = sac_reward

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
            batch.sample_act = torch.as_tensor(buf.actions[idx, 0], dtype=torch.float32)
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

    def _reward_steps(self, steps: int, demo_weight: float, pref_weight: float) -> dict:
        logs: dict = {}
        for _ in range(steps):
            batch = self._reward_batch(demo_weight, pref_weight)
            loss, logs = reward_loss(self.reward_net, batch, demo_weight, pref_weight)
            self.reward_optimizer.zero_grad()
            loss.backward()
            self.reward_optimizer.step()
        return logs

    def _fit_sac_reward_normalization(self) -> dict:
        """``sac_reward_normalization="buffer"``: set the reward SAC sees to ``(r - mean) / std`` (with
        ``survival_bonus``: ``(r - min) / std >= 0``) over evenly spaced replay-buffer states, or the
        data's states while the buffer is empty. Draws no random numbers, so a resumed run recomputes
        the values the stopped one used. Returns logs."""
        c = self.config
        if c.sac_reward_normalization == "none":
            return {}
        buf = self.model.replay_buffer
        size = buf.buffer_size if buf.full else buf.pos
        if size >= 2:
            idx = np.linspace(0, size - 1, min(size, c.normalization_samples)).astype(np.int64)
            obs, act = buf.observations[idx, 0], buf.actions[idx, 0]
        else:
            obs, act = self.data_obs, self.data_act
        with torch.no_grad():
            r = self.reward_net(torch.as_tensor(obs, dtype=torch.float32), torch.as_tensor(act, dtype=torch.float32))
        # The floor only guards against dividing by zero; a reward that barely moved is meant to be amplified.
        self.sac_reward_divisor = max(r.std().item(), 1e-3)
        self.sac_reward_offset = -(r.min().item() if c.survival_bonus else r.mean().item())
        return {"sac_reward/mean": r.mean().item(), "sac_reward/std": r.std().item()}

    def _evaluate(self, round_: int) -> dict:
        c = self.config
        returns = evaluate_policy(
            lambda o: self.model.predict(o, deterministic=True)[0], c.env_id, c.eval_episodes, c.seed + 1_000_000
        )
        return {
            "round": round_,
            "env_steps": int(self.model.num_timesteps),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "normalized_return": normalized_score(returns, self.random_return, self.expert_return),
        }

    # ----------------------------------------------------------------------------------------
    def train(self) -> dict:
        c = self.config
        if c.method == "bc":
            return self._finish(*self._behaviour_cloning())
        from tqdm.auto import tqdm

        self._build()
        start_round, history, timing = 0, [], {"sac_s": 0.0, "reward_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0}
        ckpt = os.path.join(c.output_dir, "checkpoint")
        if c.resume and os.path.isdir(ckpt):
            start_round, history, timing = self._load_checkpoint(ckpt)
        elif c.method in ("pref_rl", "two_stage") and self.prefs is not None:
            t0 = time.perf_counter()
            self._reward_steps(c.reward_pretrain_steps, 0.0, 1.0)
            timing["reward_s"] += time.perf_counter() - t0
        self._fit_sac_reward_normalization()
        bar = tqdm(total=c.rounds, initial=start_round, desc=f"{c.method} {c.env_id}", disable=not c.progress)
        for r in range(start_round, c.rounds):
            t0 = time.perf_counter()
            self.model.learn(c.sac_steps_per_round, reset_num_timesteps=False, progress_bar=False)
            t1 = time.perf_counter()
            logs = self._reward_steps(c.reward_steps_per_round, self.demo_weight, self.pref_weight)
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
        bar.close()
        return self._finish(history, timing)

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
            "final": final,
            "history": history,
            "timing": {**timing, "env_steps_per_s": env_steps / total_s if total_s > 0 else None},
            "config": dataclasses.asdict(c),
        }
        os.makedirs(c.output_dir, exist_ok=True)
        self.save_policy()
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
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        mine = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in _RESUMABLE}
        # A setting added after the checkpoint was written had its default then.
        defaults = dataclasses.asdict(ControlConfig())
        theirs = {k: meta["config"].get(k, defaults[k]) for k in mine}
        changed = sorted(k for k in mine if mine[k] != theirs[k])
        if changed:
            raise ConfigError(
                f"{path} was written with different settings ({', '.join(changed)}); use a new output_dir or "
                "--resume false"
            )
        model, buf = self.model, self.model.replay_buffer
        state = torch.load(os.path.join(path, "state.pt"), weights_only=True)
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
        with np.load(os.path.join(path, "buffer.npz"), allow_pickle=False) as arrays:
            for k in _BUFFER_ARRAYS:
                getattr(buf, k)[: len(arrays[k])] = arrays[k]
        buf.pos, buf.full = meta["buffer_pos"], meta["buffer_full"]
        model.num_timesteps, model._n_updates = meta["num_timesteps"], meta["n_updates"]
        self.rng.bit_generator.state = meta["rng"]
        g = meta["np_global_rng"]
        np.random.set_state((g[0], np.asarray(g[1], dtype=np.uint32), *g[2:]))
        return meta["round"], meta["history"], meta["timing"]

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
        returns = evaluate_policy(self.bc_policy.act, c.env_id, c.eval_episodes, c.seed + 1_000_000)
        history = [
            {
                "round": 1,
                "bc_steps": c.bc_steps,
                "env_steps": 0,
                "loss": loss.item(),
                "return_mean": float(returns.mean()),
                "return_std": float(returns.std()),
                "normalized_return": normalized_score(returns, self.random_return, self.expert_return),
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

    def load_policy(self, path: str):
        """Load :meth:`save_policy`'s file; returns ``act(obs) -> action`` (deterministic)."""
        from safetensors.torch import load_file

        weights = load_file(path)
        if self.config.method == "bc":
            self.bc_policy = BCPolicy(
                self.env.observation_space, self.env.action_space, parse_sizes(self.config.net_arch)
            )
            self.bc_policy.load_state_dict(weights)
            return self.bc_policy.act
        self._build()
        self.model.actor.load_state_dict(weights)
        return lambda o: self.model.predict(o, deterministic=True)[0]


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
