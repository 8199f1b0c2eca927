"""The AIHF loop for continuous control (method.md, "Instantiations" 1 and "Control specifics"),
and the baselines that are settings of it (preference-only RL, ML-IRL, two-stage) or beside it
(behaviour cloning, :mod:`aihf.control.bc`; the null rewards and ``true_reward``, SAC on the env's
own reward, the reference a perfect learned reward could reach at this budget).

Each round: ``sac_steps_per_round`` env steps of stable-baselines3 SAC on the current learned
reward (SAC is warm-started across rounds: one model, one replay buffer, rewards relabelled with
the current reward net each time a minibatch is drawn: :mod:`aihf.control.sac`), then
``reward_steps_per_round`` Adam steps on ``w_D * ML-IRL(demo states vs the policy's fresh states)
+ w_P * Bradley-Terry(pairs)`` (:func:`aihf.control.reward.reward_loss`, i.e.
:func:`aihf.losses.reward_model_loss`). By default (``survival_bonus``) SAC is trained on
``r_theta + bound >= 0`` so that ending an episode early (Hopper falling) is never a way to avoid
negative reward; for envs without early termination the shift changes no optimum and can be off.

Checkpoints (``output_dir/checkpoint``, written atomically after every round, no pickles:
:mod:`aihf.control.checkpoint`): a run resumes only from its own ``output_dir`` and only when the
configuration matches.

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
import sys
import time

import numpy as np
import torch

from ..errors import ConfigError, DataError, NonFiniteError
from .bc import BCPolicy, behaviour_cloning
from .checkpoint import (
    check_previous_run,
    read_checkpoint_meta,
    recover_checkpoint,
    refuse_other_settings,
    restore_checkpoint,
    save_checkpoint,
)
from .config import TRUE_REWARD, ControlConfig, parse_sizes
from .data import Preferences, Trajectories, load_preferences, load_trajectories
from .envs import check_memory, episode_summary, evaluate_episodes, json_safe, make_env, normalized_score, replay_buffer_bytes
from .reward import RewardBatch, RewardNet, env_actions, reward_loss
from .sac_reward import learns_reward, survival_bonus_line, survival_bonus_record, terminations

__all__ = ["ControlTrainer", "load_policy"]


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
        if c.sac_backend == "sbx" and c.method != "bc":  # bc trains no SAC
            from .sbx_backend import require_sbx

            require_sbx(source, c.torch_threads)
        self.demos: Trajectories | None = None
        if c.demonstrations is not None and c.method not in ("pref_rl", TRUE_REWARD):
            self.demos = load_trajectories(c.demonstrations, obs_space, act_space)
            if c.num_demonstrations is not None:
                if not 1 <= c.num_demonstrations <= self.demos.num_episodes:
                    raise ConfigError(
                        f"num_demonstrations={c.num_demonstrations} (from {source}) must be between 1 and the "
                        f"{self.demos.num_episodes} episodes in {c.demonstrations}"
                    )
                self.demos = self.demos.episodes(range(c.num_demonstrations))
        elif c.demonstrations is not None and c.reference_returns is None and not os.path.isfile(c.demonstrations):
            # Never opened here, but it locates the reference returns (meta.json beside it): a typo
            # would otherwise drop the normalised scores without a word.
            why = f"method={c.method} reads only the meta.json beside it, for the reference returns"
            why += "; or set reference_returns"
            raise DataError(c.demonstrations, None, None, f"no such file ({why})")
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
        from .sac import CheckedSAC, RelabelledReplayBuffer

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
        if obs_rows:  # true_reward reads no data: its reward net stays as built, never called
            self.data_obs, self.data_act = np.concatenate(obs_rows), np.concatenate(act_rows)
            self.reward_net.set_normalization(self.data_obs, self.data_act)
        self.reward_optimizer = torch.optim.Adam(self.reward_net.parameters(), lr=c.reward_learning_rate)
        if c.sac_backend == "sbx":
            from .sbx_backend import checked_sbx_sac as sac_class
        else:
            sac_class = CheckedSAC
        self.model = sac_class(
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
            replay_buffer_class=RelabelledReplayBuffer,
            # true_reward: no relabelling, so minibatches hold the env's rewards as stored.
            replay_buffer_kwargs={"reward_fn": None if c.method == TRUE_REWARD else self._sac_reward},
            policy_kwargs={"net_arch": parse_sizes(c.net_arch)},
            seed=c.seed,
            device="cpu",
            verbose=0,
        )
        # SAC sees scale * (r + offset) / divisor; _fit_sac_reward_normalization may change the two.
        self.sac_reward_offset, self.sac_reward_divisor = (self.reward_net.bound if c.survival_bonus else 0.0), 1.0

    def _sac_reward(self, observations, actions) -> torch.Tensor:
        """The reward SAC's minibatches are relabelled with (:class:`~aihf.control.sac.RelabelledReplayBuffer`):
        ``sac_reward_scale * (r + offset) / divisor``; a non-finite one stops the run."""
        r = self.buffer_reward(observations, actions)
        rewards = self.config.sac_reward_scale * (r + self.sac_reward_offset) / self.sac_reward_divisor
        if not bool(torch.isfinite(rewards).all()):
            what = f"the learned reward fed to SAC is {_first_nonfinite(rewards)}"
            raise self._nonfinite_error(what, "SAC minibatch")
        return rewards

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
            loss, step_logs = reward_loss(
                self.reward_net, batch, demo_weight, pref_weight, grad_norms=last, demo_loss=self.config.demo_loss
            )
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
        if c.sac_reward_normalization == "none" or c.method in ("null_constant", TRUE_REWARD):  # no net to scale
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
        played = evaluate_episodes(
            lambda o: self.model.predict(o, deterministic=True)[0], c.env_id, episodes, c.seed + 1_000_000
        )
        return {
            "round": round_,
            "env_steps": int(self.model.num_timesteps),
            **episode_summary(played),
            "normalized_return": normalized_score(played["returns"], self.random_return, self.expert_return),
            "episodes": episodes,
        }

    # ----------------------------------------------------------------------------------------
    def train(self) -> dict:
        c = self.config
        if c.resume:
            check_previous_run(c, self.checkpoint_dir)
        cpu_start = time.process_time()  # the run's own CPU seconds, over all its sittings: timing["cpu_s"]
        if c.method == "bc":
            self.bc_policy, history, timing = behaviour_cloning(
                c, self.demos, self.env, self.rng, self.random_return, self.expert_return
            )
            return self._finish(history, {**timing, "cpu_s": time.process_time() - cpu_start})
        from tqdm.auto import tqdm

        from .sac import NonFiniteUpdate

        self._build()
        self._check_disk_space()
        start_round, history, timing = 0, [], {"sac_s": 0.0, "reward_s": 0.0, "eval_s": 0.0, "checkpoint_s": 0.0}
        ckpt = self.checkpoint_dir
        if c.resume:
            recover_checkpoint(ckpt)
        if c.resume and os.path.isdir(ckpt):
            start_round, history, timing = self._load_checkpoint(ckpt)
        elif c.method in ("pref_rl", "two_stage") and self.prefs is not None:
            t0 = time.perf_counter()
            self._reward_steps(c.reward_pretrain_steps, 0.0, 1.0, label="reward pretraining step")
            timing["reward_s"] += time.perf_counter() - t0
        self._fit_sac_reward_normalization()
        cpu_before = timing.get("cpu_s", 0.0)  # a resumed run's earlier sittings
        # A checkpoint from before cpu_s was recorded hides its sittings' CPU: record none rather than a part.
        # A finished run's rerun trains nothing, so it adds none either.
        count_cpu = (start_round == 0 or "cpu_s" in timing) and start_round < c.rounds
        if self.announce is not None:
            self.announce(survival_bonus_line(c))
            steps_done = f"({int(self.model.num_timesteps)} env steps done)"
            if start_round >= c.rounds:
                self.announce(
                    f"{c.output_dir} has already run {start_round} of {c.rounds} rounds {steps_done}: nothing left "
                    "to train; its result is written again"
                )
            elif start_round:
                self.announce(f"resuming {c.output_dir} after round {start_round} of {c.rounds} {steps_done}")
        bar = tqdm(total=c.rounds, initial=start_round, desc=f"{c.method} {c.env_id}", disable=not c.progress)
        try:
            for r in range(start_round, c.rounds):
                self.round = r
                t0 = time.perf_counter()
                self._start_episode(r)
                try:
                    self.model.learn(c.sac_steps_per_round, reset_num_timesteps=False, progress_bar=False)
                except NonFiniteUpdate as e:
                    raise self._nonfinite_error(str(e), "SAC update") from None
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
                if count_cpu:
                    timing["cpu_s"] = cpu_before + time.process_time() - cpu_start
                self._save_checkpoint(ckpt, r + 1, history, timing)
                timing["checkpoint_s"] = timing.get("checkpoint_s", 0.0) + time.perf_counter() - t3
                bar.update(1)
        finally:
            bar.close()
        if count_cpu:
            timing["cpu_s"] = cpu_before + time.process_time() - cpu_start  # the last checkpoint's write too
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
        if c.method not in ("bc", "null_constant", TRUE_REWARD):  # the others' SAC never sees a reward net
            self.save_reward()
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

        if self.config.sac_backend == "sbx":
            from .sbx_backend import parameter_count

            sac = parameter_count(self.model)
        else:
            sac = sum(p.numel() for p in self.model.policy.parameters())
        weights = 4 * (sac + sum(p.numel() for p in self.reward_net.parameters()))
        buffer = replay_buffer_bytes(self.config, self.env.observation_space, self.env.action_space)
        # A resumed run's last checkpoint is on disk already: the next save needs room for one more.
        check_disk_space(
            self.config.output_dir, buffer + 3 * weights, count=1 if os.path.isdir(self.checkpoint_dir) else 2
        )

    def _save_checkpoint(self, path: str, round_: int, history: list, timing: dict) -> None:
        state = {
            "nonfinite_skipped": self.nonfinite_skipped,
            "history": history,
            "timing": timing,
            "config": dataclasses.asdict(self.config),
        }
        save_checkpoint(path, self.model, self.reward_net, self.reward_optimizer, self.rng, round_, state)

    def _load_checkpoint(self, path: str):
        meta = read_checkpoint_meta(path)
        refuse_other_settings(self.config, path, meta["config"])
        restore_checkpoint(path, meta, self.model, self.reward_net, self.reward_optimizer, self.rng)
        self.nonfinite_skipped = int(meta.get("nonfinite_skipped", 0))
        self.round = meta["round"]
        return meta["round"], meta["history"], meta["timing"]

    def save_policy(self) -> str:
        """Write the trained policy to ``output_dir/policy.safetensors`` (SAC actor or BC net)."""
        from safetensors.torch import save_file

        path = os.path.join(self.config.output_dir, "policy.safetensors")
        if self.config.method != "bc" and self.config.sac_backend == "sbx":
            from .sbx_backend import actor_arrays

            weights = {k: torch.from_numpy(v.copy()) for k, v in actor_arrays(self.model).items()}
        else:
            module = self.bc_policy if self.config.method == "bc" else self.model.actor
            weights = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
        save_file(weights, path + ".tmp")
        os.replace(path + ".tmp", path)
        return path

    def save_reward(self) -> str:
        """Write the reward net (its weights and input standardisation) to ``output_dir/reward.safetensors``;
        :func:`aihf.control.reward_quality.load_run_reward` reads it back with ``result.json``'s config."""
        from safetensors.torch import save_file

        path = os.path.join(self.config.output_dir, "reward.safetensors")
        save_file({k: v.detach().contiguous() for k, v in self.reward_net.state_dict().items()}, path + ".tmp")
        os.replace(path + ".tmp", path)
        return path


def load_policy(config: ControlConfig, path: str):
    """The policy file :meth:`ControlTrainer.save_policy` wrote for a run of ``config``, as
    ``act(obs) -> action`` (deterministic). Needs the env and the network sizes only, not the run's
    data, so a run folder evaluates after its data has moved. Raises ``OSError``, ``RuntimeError`` or
    safetensors' error for a file that is not such a policy; :class:`aihf.ConfigError` for an sbx
    run's policy without sbx installed, or one that does not fit ``net_arch``."""
    from safetensors.torch import load_file

    weights = load_file(path)
    env = make_env(config.env_id)
    if config.method == "bc":
        policy = BCPolicy(env.observation_space, env.action_space, parse_sizes(config.net_arch))
        policy.load_state_dict(weights)
        return policy.act
    if config.sac_backend == "sbx":
        from .sbx_backend import require_sbx, sbx_policy

        require_sbx(path)
        return sbx_policy(env, parse_sizes(config.net_arch), {k: v.numpy() for k, v in weights.items()}, path)
    from stable_baselines3 import SAC

    # Only the actor is used: a one-transition buffer instead of the run's.
    model = SAC("MlpPolicy", env, buffer_size=1, policy_kwargs={"net_arch": parse_sizes(config.net_arch)}, device="cpu")
    model.actor.load_state_dict(weights)
    return lambda o: model.predict(o, deterministic=True)[0]
