"""The reward steps of :class:`aihf.llm.AIHFRLTrainer` (a mixin): ``pref_weight * BT(preferences) +
demo_weight * D(demonstration vs policy sample)`` (method.md, (AIHF) with an explicit reward model), the
reward pretraining before the first round, and the reward model's evaluation and scoring."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .. import losses
from ..data import BatchLayout, prepare_demonstrations
from .model_setup import stable_seed
from .reward_model import evaluate_reward_model
from .rl_parallel import trainable


def load_params(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` (name -> tensor) into ``model``'s trainable parameters."""
    params = trainable(model)
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


class RewardStepMixin:
    """Needs the trainer's ``reward_model``, ``reward_optimizer``/``reward_scheduler``, data, samplers and
    ``_log``, and the :class:`aihf.llm.rl_parallel.DataParallelMixin` methods."""

    def reward_loss(
        self,
        preferences: dict[str, list] | None,
        demonstrations: dict[str, list] | None,
        samples: list[list[list[int]]] | None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The reward step's loss ``pref_weight * BT + demo_weight * D (+ centring)`` on a batch.

        ``preferences``: columns ``prompt_ids``, ``chosen_ids``, ``rejected_ids``; ``demonstrations``:
        ``prompt_ids``, ``completion_ids``; ``samples[i]``: the policy's samples for demonstration
        ``i`` (each is paired with the demonstration in ``D``). All rows are scored in one forward pass.
        """
        args = self.args
        prompts: list[list[int]] = []
        answers: list[list[int]] = []
        n_p = 0
        if preferences is not None:
            n_p = len(preferences["prompt_ids"])
            prompts += list(preferences["prompt_ids"]) * 2
            answers += list(preferences["chosen_ids"]) + list(preferences["rejected_ids"])
        n_d = n_s = 0
        sample_owner: list[int] = []
        if demonstrations is not None:
            n_d = len(demonstrations["prompt_ids"])
            prompts += list(demonstrations["prompt_ids"])
            answers += list(demonstrations["completion_ids"])
            for i, group in enumerate(samples):
                prompts += [demonstrations["prompt_ids"][i]] * len(group)
                answers += list(group)
                sample_owner += [i] * len(group)
            n_s = len(sample_owner)
        scores = self._scores(prompts, answers)
        rows = BatchLayout(n_p, n_d, n_s)
        demo_scores = sample_scores = None
        if n_d:  # each sample is paired with the demonstration whose prompt it answers
            demo_scores = scores[rows.demos][torch.tensor(sample_owner, device=scores.device)]
            sample_scores = scores[rows.samples]
        out = losses.reward_model_loss(
            scores[rows.chosen] if n_p else None,
            scores[rows.rejected] if n_p else None,
            demo_scores,
            sample_scores,
            demo_weight=args.demo_weight,
            pref_weight=args.pref_weight,
            demo_loss=args.demo_loss,
            reward_clamp=args.reward_clamp,
            center_rewards_coefficient=args.center_rewards_coefficient,
        )
        metrics = {f"reward_model/{name}": value for name, value in out.metrics.items()}
        metrics["reward_model/mean_reward"] = scores.mean().item()
        return out.loss, metrics

    def _reward_update(self, loss: Tensor, metrics: dict[str, float], where: str) -> None:
        loss.backward()
        self._sync_grads(self.reward_model)
        terms = {k: v for k, v in metrics.items() if k.startswith("reward_model/loss") or k.endswith("mean_reward")}
        terms["reward_model/loss"] = loss
        if self._update_is_finite(where, terms, self.reward_model):
            if self.args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable(self.reward_model).values(), self.args.max_grad_norm)
            self.reward_optimizer.step()
        self.reward_scheduler.step()
        self.reward_optimizer.zero_grad(set_to_none=True)

    def _pref_batch(self, size: int) -> dict[str, list]:
        return self.preferences[self._samplers["pref"].take_shard(size, self.world, self.rank)]

    def reward_step(self, demo_indices: list[int], samples: list[list[list[int]]]) -> dict[str, float]:
        start = time.perf_counter()
        self.reward_model.train()
        prefs = self._pref_batch(self.args.reward_batch_size) if self.args.pref_weight > 0 else None
        demos = self.demonstrations[demo_indices] if demo_indices and self.args.demo_weight > 0 else None
        loss, metrics = self.reward_loss(prefs, demos, samples if demos is not None else None)
        self._reward_update(loss, metrics, f"round {self.round + 1}, reward step")
        self.timings["reward_step"] += time.perf_counter() - start
        return metrics

    @torch.no_grad()
    def score(self, prompts: list[str], completions: list[str], batch_size: int | None = None) -> list[float]:
        """The current reward model's ``r(x, y)`` of text rows (``prompts[i]``, ``completions[i]``),
        tokenized as the demonstrations are and framed and read out as in training: a list of floats.
        Raises ``TypeError`` unless both are lists of texts (or message lists), ``ValueError`` when
        their lengths differ."""
        if isinstance(prompts, str) or isinstance(completions, str):
            raise TypeError("score(prompts, completions) takes two lists of texts, one row each, not strings")
        prompts, completions = list(prompts), list(completions)
        if len(prompts) != len(completions):
            raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
        rows = prepare_demonstrations(
            [{"prompt": p, "completion": c} for p, c in zip(prompts, completions)],
            self.tokenizer,
            max_length=self.args.max_length,
            max_prompt_length=self.args.max_prompt_length,
            eos_token=self.args.eos_token,
        )
        size = batch_size or self.args.reward_batch_size
        was_training = self.reward_model.training
        self.reward_model.eval()
        out: list[float] = []
        for start in range(0, len(rows), size):
            part = rows[start : start + size]
            out += self._scores(list(part["prompt_ids"]), list(part["completion_ids"])).tolist()
        self.reward_model.train(was_training)
        return out

    def evaluate_reward(self, preferences: Any = None) -> dict[str, float]:
        """``reward/eval_accuracy`` and ``reward/eval_margin`` on held-out pairs (default: eval_preferences)."""
        prefs = self.eval_preferences if preferences is None else preferences
        if prefs is None:
            return {}
        with self._autocast():
            out = evaluate_reward_model(
                self.reward_model,
                prefs,
                self.pad,
                self.args.reward_batch_size,
                self.readout,
                end_token_id=self.stop_tokens,
            )
        return {"reward/eval_accuracy": out["accuracy"], "reward/eval_margin": out["margin"]}

    def pretrain_reward(self) -> dict[str, float]:
        """``reward_pretrain_steps`` Bradley-Terry steps on the preferences, early-stopped on held-out
        pair accuracy when ``reward_pretrain_patience`` is set (the best reward model is kept)."""
        args = self.args
        best, best_state, waited = -1.0, None, 0
        last: dict[str, float] = {}
        bar = tqdm(range(args.reward_pretrain_steps), desc="reward model", disable=args.disable_tqdm or self.rank > 0)
        for step in bar:
            self.reward_model.train()
            loss, metrics = self.reward_loss(self._pref_batch(args.reward_batch_size), None, None)
            self._reward_update(loss, metrics, f"reward pretraining step {step + 1}")
            last = {f"reward_pretrain/{k.split('/')[-1]}": v for k, v in self._average(metrics).items()}
            if args.reward_pretrain_patience is None or (step + 1) % args.reward_pretrain_eval_steps:
                continue
            with self._autocast():
                acc = evaluate_reward_model(
                    self.reward_model,
                    self.holdout,
                    self.pad,
                    args.reward_batch_size,
                    self.readout,
                    end_token_id=self.stop_tokens,
                )
            last["reward_pretrain/holdout_accuracy"] = acc["accuracy"]
            bar.set_postfix(holdout_accuracy=acc["accuracy"])
            if acc["accuracy"] > best:
                best, waited = acc["accuracy"], 0
                best_state = {n: p.detach().clone() for n, p in trainable(self.reward_model).items()}
            else:
                waited += 1
                if waited >= args.reward_pretrain_patience:
                    break
        if best_state is not None:
            load_params(self.reward_model, best_state)
            last["reward_pretrain/best_holdout_accuracy"] = best
        last["reward_pretrain/steps"] = step + 1 if args.reward_pretrain_steps else 0
        self.pretrain_done = True
        self._log(last, step=0)
        return last

    def _reward_step_demos(
        self, last_step: list[tuple[int, list[list[int]]]]
    ) -> list[tuple[list[int], list[list[list[int]]]]]:
        """``(demonstration indices, their samples)`` for each of the round's reward steps.

        All samples are of one age: with ``fresh_reward_samples`` each step gets its own
        ``reward_demo_batch_size`` demonstrations, with samples drawn from the current policy in one
        generation; otherwise every step reuses the last policy step's samples on its demonstration
        prompts (new samples if it drew none)."""
        args, k, n_steps = self.args, self.args.num_generations, self.args.reward_steps_per_round
        if args.demo_weight == 0:
            return [([], [])] * n_steps
        if last_step and not args.fresh_reward_samples:
            indices = [j for j, _ in last_step]
            return [(indices, [group for _, group in last_step])] * n_steps
        per_step = args.reward_demo_batch_size or args.per_device_train_batch_size
        n_fresh = per_step * (n_steps if args.fresh_reward_samples else 1)
        drawn = self._samplers["demo"].take_shard(n_fresh, self.world, self.rank)
        prompts = [p for p in self.demonstrations[drawn]["prompt_ids"] for _ in range(k)]
        fresh = self._generate(prompts, stable_seed(args.seed, 6, self.round, self.rank))
        groups = [fresh[i * k : (i + 1) * k] for i in range(len(drawn))]
        if not args.fresh_reward_samples:
            return [(drawn, groups)] * n_steps
        return [(drawn[a : a + per_step], groups[a : a + per_step]) for a in range(0, n_fresh, per_step)]
