"""The policy step of :class:`aihf.llm.AIHFRLTrainer` (a mixin): sampling, scoring and the RLOO / PPO-clip update.

Reward ``r(x, y) - beta * log(pi/pi_ref)(y|x)`` per sample, RLOO's leave-one-out baseline over the
``num_generations`` samples of a prompt, then one REINFORCE update or ``num_ppo_epochs * num_mini_batches``
PPO-clip updates on the same samples (method.md, instantiation 1, (L)). With ``gradient_accumulation_steps=g``
each update's rows are run forward and backward in ``g`` parts (one optimizer step, the same gradient).
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from torch import Tensor, nn

from .. import losses
from ..data import pad_sequences
from . import reference
from .logprobs import packed_logits, token_logps
from .model_setup import stable_seed
from .reward_funcs import combined_scores
from .reward_model import reward_scores
from .rl_parallel import trainable


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


class PolicyStepMixin:
    """Needs the trainer's models, ``generator``, ``args``, ``reward_funcs``/``reward_weights``, ``timings`` and
    the :class:`aihf.llm.rl_parallel.DataParallelMixin` methods."""

    def _generate(self, prompts: list[list[int]], seed: int) -> list[list[int]]:
        start = time.perf_counter()
        was_training = self.policy.training
        self.policy.eval()
        completions = self.generator(self.policy, prompts, seed)
        self.policy.train(was_training)
        limit = self.args.max_length
        completions = [c[: limit - len(p)] if limit else c for p, c in zip(prompts, completions)]
        completions = [c or self.stop_tokens[:1] for c in completions]  # never an empty answer: the end token alone
        self.timings["generation"] += time.perf_counter() - start
        return completions

    def _token_logps(self, model: nn.Module, rows: dict[str, Tensor], entropy: bool = False):
        """Per-token log-probs ``(B, T-1)`` of ``rows`` under ``model`` at the sampling temperature,
        the completion mask ``(B, T-1)`` and, if asked, the mean entropy over completion tokens."""
        input_ids = rows["input_ids"].to(self.device)
        attention_mask = rows["attention_mask"].to(self.device)
        with self._autocast():
            if self.args.padding_free:
                logits = packed_logits(model, input_ids, attention_mask)
            else:
                logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        logits = logits[:, -input_ids.shape[1] :][:, :-1].float() / self.args.temperature
        per_token = token_logps(logits, input_ids[:, 1:])
        mask = rows["completion_mask"][:, 1:].to(self.device)
        ent = None
        if entropy:
            with torch.no_grad():
                values = []
                for row_logits, row_mask in zip(logits, mask):
                    logp = torch.log_softmax(row_logits[row_mask.bool()], dim=-1)
                    values.append(-(logp.exp() * logp).sum(-1))
                ent = torch.cat(values).mean()
        return per_token, mask, ent

    @torch.no_grad()
    def _ref_token_logps(self, rows: dict[str, Tensor]) -> Tensor:
        if self.ref_model is not None:
            return self._token_logps(self.ref_model, rows)[0]
        with reference.reference_mode(self.policy, self._ref_adapter):
            return self._token_logps(self.policy, rows)[0]

    def _scores(self, prompts: list[list[int]], completions: list[list[int]]) -> Tensor:
        with self._autocast():
            # Framed alike (reward_model.frame_for_reward): the end token tells no answer apart.
            return reward_scores(
                self.reward_model, prompts, completions, self.pad, readout=self.readout, end_token_id=self.stop_tokens
            )

    def _policy_scores(self, prompts: list[list[int]], completions: list[list[int]]) -> tuple[Tensor, dict]:
        """The policy's reward before the KL penalty: the reward model's score plus any ``reward_funcs``."""
        w = self.reward_weights
        if not self.reward_funcs:
            # reward_weights=[w0] alone scales the reward model's score.
            return w[0] * self._scores(prompts, completions), {}
        model_scores = self._scores(prompts, completions) if w[0] != 0 else None
        texts = [self.tokenizer.batch_decode(x, skip_special_tokens=True) for x in (prompts, completions)]
        scores, metrics = combined_scores(model_scores, self.reward_funcs, w, *texts)
        return scores.to(self.device), metrics

    def policy_step(self, prompts: list[list[int]], completions: list[list[int]], step: int) -> dict[str, float]:
        """One RL update (or ``num_ppo_epochs * num_mini_batches`` PPO updates) on the samples
        ``completions`` (``k`` consecutive ones per prompt, ``prompts`` repeated to match).
        Returns the step's metrics (floats); adds the step's tokens to ``self.round_tokens``."""
        start = time.perf_counter()
        args, k = self.args, self.args.num_generations
        n = len(completions)
        rows = pad_sequences(prompts, completions, self.pad)
        self.round_tokens += int(rows["attention_mask"].sum())
        self.reward_model.eval()
        updates = args.num_ppo_epochs * args.num_mini_batches
        parts = args.gradient_accumulation_steps
        # With one update per step, no dropout and no accumulation, the update's policy pass (with grad) gives
        # exactly the sampling policy's log-probs, so it doubles as the no-grad "old" pass (one forward fewer).
        single_pass = self.reuse_policy_pass and args.disable_dropout and updates == 1 and parts == 1
        if single_pass:
            self.policy.train()
            tok_with_grad, mask, entropy = self._token_logps(self.policy, rows, entropy=True)
            old_tok = tok_with_grad.detach()
        with torch.no_grad():
            if not single_pass:
                old_tok, mask, entropy = self._token_logps(self.policy, rows, entropy=True)
            ref_tok = self._ref_token_logps(rows)
            raw_scores, func_metrics = self._policy_scores(prompts, completions)
        fmask = mask.to(old_tok.dtype)
        old_logps, ref_logps = (old_tok * fmask).sum(1), (ref_tok * fmask).sum(1)
        has_eos = torch.tensor([c[-1] in self.stop_tokens for c in completions], device=self.device)
        scores = raw_scores
        if args.missing_eos_penalty is not None:
            scores = scores - args.missing_eos_penalty * (~has_eos).to(scores.dtype)
        if args.reward_clip_range is not None:
            scores = scores.clamp(-args.reward_clip_range, args.reward_clip_range)
        if args.whiten_rewards:
            scores = losses.whiten(scores)
        rewards = losses.kl_regularized_rewards(scores, old_logps, ref_logps, args.beta)
        advantages = losses.rloo_advantages(rewards.view(-1, k)).view(-1)
        if args.normalize_advantages:
            advantages = losses.whiten(advantages)

        self.policy.train()
        n_prompts = n // k
        per_mb = n_prompts // args.num_mini_batches
        gen = torch.Generator().manual_seed(stable_seed(args.seed, 4, step, self.rank))
        stats = defaultdict(list)
        for _ in range(args.num_ppo_epochs):
            order = torch.randperm(n_prompts, generator=gen) if args.num_mini_batches > 1 else torch.arange(n_prompts)
            for m in range(args.num_mini_batches):
                idx = (order[m * per_mb : (m + 1) * per_mb].unsqueeze(1) * k + torch.arange(k)).reshape(-1)
                if single_pass:  # the one mini-batch is all rows, in order
                    out = losses.clipped_policy_loss(tok_with_grad, old_tok, advantages, mask, args.cliprange)
                    out.loss.backward()
                    update = {"loss": out.loss.detach(), "clip": out.clip_fraction, "kl": out.approx_kl}
                else:
                    update = self._accumulate(rows, idx, old_tok, advantages, parts, updates > 1)
                self._sync_grads(self.policy)
                where = f"round {self.round + 1}, policy step {step + 1}"
                if self._update_is_finite(where, {"reward": raw_scores, "policy/loss": update["loss"]}, self.policy):
                    if args.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(trainable(self.policy).values(), args.max_grad_norm)
                    self._event("on_pre_optimizer_step")
                    self.policy_optimizer.step()
                    self._event("on_optimizer_step")
                    stats["policy/loss"].append(update["loss"].item())
                    stats["policy/clip_fraction"].append(update["clip"].item())
                    stats["policy/approx_kl"].append(update["kl"].item())
                    if "low" in update:
                        low, high = update["low"].item(), update["high"].item()
                        stats["clip_ratio/low_mean"].append(low)
                        stats["clip_ratio/high_mean"].append(high)
                        stats["clip_ratio/region_mean"].append(low + high)
                self.policy_scheduler.step()
                self.policy_optimizer.zero_grad(set_to_none=True)

        lengths = fmask.sum(1)
        metrics = {
            "reward": raw_scores.mean().item(),
            "reward_std": raw_scores.std(unbiased=False).item(),
            "frac_reward_zero_std": (raw_scores.view(-1, k).std(1) == 0).float().mean().item(),
            "rlhf_reward": rewards.mean().item(),
            "kl": ((old_tok - ref_tok) * fmask).sum().item() / max(1.0, fmask.sum().item()),
            "kl_sequence": (old_logps - ref_logps).mean().item(),
            "entropy": entropy.item(),
            "completions/mean_length": lengths.mean().item(),
            "completions/clipped_ratio": (~has_eos).float().mean().item(),
            "learning_rate": self.policy_scheduler.get_last_lr()[0],
        }
        metrics.update({name: mean(v) for name, v in stats.items()})
        metrics.update(func_metrics)
        if self.gold_reward is not None:
            texts = [self.tokenizer.batch_decode(x, skip_special_tokens=True) for x in (prompts, completions)]
            gold = self.gold_reward(*texts)
            metrics["gold_reward"] = mean([float(g) for g in gold])
        self.timings["policy_step"] += time.perf_counter() - start
        return metrics

    def _accumulate(
        self, rows: dict[str, Tensor], idx: Tensor, old_tok: Tensor, advantages: Tensor, parts: int, ratios: bool
    ) -> dict[str, Tensor]:
        """Backward of one update's clipped loss on rows ``idx`` (whole RLOO groups), in ``parts`` forward/backward
        passes whose losses are weighted by their share of the rows, so that the summed gradient is the one of a
        single pass. Returns the update's loss and its token-weighted clip fraction, approximate KL and, if
        ``ratios``, TRL's clip ratios."""
        args, k = self.args, self.args.num_generations
        groups = idx.view(-1, k)
        per_part = groups.shape[0] // parts
        total: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=self.device))
        tokens = torch.zeros((), device=self.device)
        for p in range(parts):
            part = groups[p * per_part : (p + 1) * per_part].reshape(-1)
            sub = {key: value[part] for key, value in rows.items()}
            part = part.to(self.device)
            tok, sub_mask, _ = self._token_logps(self.policy, sub)
            out = losses.clipped_policy_loss(tok, old_tok[part], advantages[part], sub_mask, args.cliprange)
            if parts == 1:  # exactly the unsplit update
                out.loss.backward()
                result = {"loss": out.loss.detach(), "clip": out.clip_fraction, "kl": out.approx_kl}
                if ratios:
                    result["low"], result["high"] = losses.clip_ratios(
                        tok.detach(), old_tok[part], advantages[part], sub_mask, args.cliprange
                    )
                return result
            share = len(part) / len(idx)
            (out.loss * share).backward()
            n_tok = sub_mask.sum().clamp_min(1).to(tokens.dtype)
            tokens = tokens + n_tok
            total["loss"] = total["loss"] + out.loss.detach() * share
            total["clip"] = total["clip"] + out.clip_fraction * n_tok
            total["kl"] = total["kl"] + out.approx_kl * n_tok
            if ratios:
                low, high = losses.clip_ratios(tok.detach(), old_tok[part], advantages[part], sub_mask, args.cliprange)
                total["low"], total["high"] = total["low"] + low * n_tok, total["high"] + high * n_tok
        return {name: value if name == "loss" else value / tokens for name, value in total.items()}
