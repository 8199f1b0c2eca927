"""AIHFRLTrainer: an explicit reward model and the policy learned jointly (method.md, instantiation 1).

Each round:

1. **policy steps** -- KL-regularised RL on the current reward model with a frozen reference:
   ``k = num_generations`` samples per prompt, reward ``r(x, y) - beta * log(pi/pi_ref)(y|x)``,
   RLOO's leave-one-out baseline, one REINFORCE update (or PPO-clip updates over
   ``num_ppo_epochs`` epochs of the same samples);
2. **policy samples for the demonstration prompts**, all of one age -- by default the samples that
   the round's last policy step drew on demonstration prompts (one update older than the policy);
   with ``fresh_reward_samples`` each reward step takes ``reward_demo_batch_size`` demonstrations
   with samples drawn from the policy after the round's policy steps;
3. **reward steps** on ``pref_weight * BT(preferences) + demo_weight * D(demonstration vs sample)``.

The policy's reward may add programmatic ``reward_funcs`` to the reward model's score
(:mod:`aihf.llm.reward_funcs`).

The loop is written out rather than built on ``transformers.Trainer``: a round holds two models,
two optimizers and a generation phase, which the Trainer's one-model step does not fit.
Under torchrun each process takes its share of every step's prompts and preference pairs, and
gradients are averaged over processes before each update (as DDP does); RLOO groups are
per process, and reward whitening / advantage normalisation use the process's own batch.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import shutil
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import datasets
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler, set_seed

from .. import losses
from ..data import pad_sequences, prepare_demonstrations, prepare_preferences, references_as_demonstrations
from ..errors import ConfigError
from . import card, guards, reference, runs
from .callbacks import RoundCallbacks
from .generation import HFGenerator, SampleGenerator
from .loading import load_policy, load_policy_tokenizer
from .logprobs import check_packing, packed_logits, token_logps
from .reward_funcs import RewardFunc, as_func_list, combined_scores, resolve_weights
from .reward_model import (
    READOUT_CONFIG_KEY,
    check_readout,
    default_readout,
    evaluate_reward_model,
    freeze_lower_layers,
    load_reward_model,
    reward_scores,
    save_reward_model,
)
from .rl_config import ROUND_FIELDS, AIHFRLConfig, unused_setting_error
from .runs import check_output_dir
from .model_setup import STAGING_DIR, disable_dropout, frozen, is_peft, refusing_pickles, stable_seed, stop_tokens

CHECKPOINT_PREFIX = "checkpoint"
STATE_FILE = "rl_state.json"
# The AIHFRLConfig (and TrainingArguments) fields a resumed run must share with its checkpoint, beside the
# models and the data: the objective, the sampling, and the optimizers' settings (a loaded scheduler keeps the
# checkpoint's learning rates, so a new one would be silently ignored). Logging, saving, evaluation, speed
# options (generation_backend, padding_free, generation_batch_size) and skip_nonfinite_steps may change.
RUN_FIELDS = (
    "demo_weight",
    "pref_weight",
    "demo_loss",
    "beta",
    "reward_clamp",
    "center_rewards_coefficient",
    "use_references_as_demonstrations",
    "learning_rate",
    "reward_learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "warmup_ratio",
    "weight_decay",
    "policy_steps_per_round",
    "reward_steps_per_round",
    "per_device_train_batch_size",
    "num_generations",
    "num_ppo_epochs",
    "num_mini_batches",
    "cliprange",
    "rl_prompts",
    "whiten_rewards",
    "reward_clip_range",
    "normalize_advantages",
    "missing_eos_penalty",
    "reward_batch_size",
    "fresh_reward_samples",
    "reward_pretrain_steps",
    "reward_pretrain_patience",
    "reward_holdout_fraction",
    "freeze_reward_model",
    "reward_freeze_layers",
    "reward_readout",
    "reward_weights",
    "reward_demo_batch_size",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "world_size",
)
GoldReward = Callable[[list[str], list[str]], list[float]]


class _Cycler:
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


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_trainable(model: nn.Module, path: str) -> None:
    save_file({n: p.detach().contiguous().cpu() for n, p in _trainable(model).items()}, path)


def _load_trainable(model: nn.Module, path: str) -> None:
    state = load_file(path)
    params = _trainable(model)
    if state.keys() != params.keys():
        raise ValueError(f"{path} does not hold this model's trainable parameters")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class AIHFRLTrainer:
    """Align ``model`` with an explicit reward model learned from demonstrations and preferences.

    Args:
        model: a causal LM, or a local path / hub id / ``.gguf`` file to load one from with
            :func:`aihf.llm.loading.load_policy` (float32 unless ``model_init_kwargs`` say otherwise;
            GGUF dequantised).
        ref_model: frozen ``pi_ref``. Default: ``model`` as given: a frozen copy; for a PEFT policy
            with a fresh (zero) LoRA adapter, the same model with its adapters disabled; for one
            whose adapter is already trained, a frozen copy of that adapter (:mod:`aihf.llm.reference`).
        reward_model: a sequence classifier with one output, a path, or ``None`` to start from
            the policy's base weights with a new score head (:mod:`aihf.llm.reward_model`).
        args: an :class:`AIHFRLConfig`.
        demonstrations / preferences / eval_preferences: a ``datasets.Dataset``, a list of dicts
            or a path (formats: :mod:`aihf.data.formats`). ``eval_preferences`` are held-out
            pairs on which ``reward/eval_accuracy`` and ``reward/eval_margin`` are logged each round.
        processing_class: the tokenizer (loaded from ``model`` when that is a path).
        peft_config / reward_peft_config: train LoRA (or other PEFT) adapters of the policy /
            reward model instead of all weights.
        generator: ``generator(model, prompts, seed) -> completions``; default :class:`HFGenerator`.
        gold_reward: optional ``gold_reward(prompts, completions) -> scores`` on decoded texts;
            its mean over each round's policy samples is logged as ``gold_reward`` (for
            experiments with a known programmatic reward; never used for training).
        reward_funcs: optional ``fn(prompts, completions) -> scores`` callables (or one) on decoded texts
            whose scores, weighted by ``args.reward_weights``, are added to the reward model's in
            the policy step (TRL's name); the reward steps never see them (:mod:`aihf.llm.reward_funcs`).
        model_init_kwargs: keyword arguments for loading ``model`` (and ``ref_model``) when they
            are paths, as in :class:`aihf.llm.AIHFTrainer` and TRL: ``dtype``, ``gguf_file``,
            ``revision``, ``attn_implementation``, ``trust_remote_code``...
        callbacks: ``transformers.TrainerCallback`` objects (or classes); ``on_train_begin``,
            ``on_step_end`` (after each round: ``state.global_step`` counts rounds) and ``on_train_end``
            are called with ``model=`` the policy (:mod:`aihf.llm.callbacks`).

    Data are read, validated and tokenised before any model is loaded from a path, so bad input
    raises :class:`aihf.DataError` (and bad settings :class:`aihf.ConfigError`) first.
    """

    def __init__(
        self,
        model: nn.Module | str,
        ref_model: nn.Module | str | None = None,
        reward_model: nn.Module | str | None = None,
        args: AIHFRLConfig | None = None,
        demonstrations: Any = None,
        preferences: Any = None,
        eval_preferences: Any = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any = None,
        reward_peft_config: Any = None,
        generator: SampleGenerator | None = None,
        gold_reward: GoldReward | None = None,
        model_init_kwargs: dict[str, Any] | None = None,
        reward_funcs: RewardFunc | list[RewardFunc] | None = None,
        callbacks: list | None = None,
    ):
        args = args if args is not None else AIHFRLConfig(output_dir="aihf-rl-output")
        if not isinstance(args, AIHFRLConfig):
            raise TypeError(f"args must be an AIHFRLConfig, got {type(args).__name__}")
        unused = unused_setting_error(args, ROUND_FIELDS)
        if unused is not None:
            raise unused
        if args.pref_weight == 0 and args.reward_pretrain_steps > 0:
            raise ConfigError(
                f"reward_pretrain_steps={args.reward_pretrain_steps} fits the reward model on the preferences, "
                "but pref_weight=0 ignores them: set reward_pretrain_steps=0 or pref_weight > 0"
            )
        self.args = args
        self.reward_funcs = as_func_list(reward_funcs)
        self.reward_weights = resolve_weights(self.reward_funcs, args.reward_weights)
        self.world, self.rank = args.world_size, args.process_index
        if self.world > 1 and not (dist.is_available() and dist.is_initialized()):
            raise ConfigError(f"world_size={self.world} but torch.distributed is not initialised: launch with torchrun")
        if model_init_kwargs and not isinstance(model, str):
            raise ConfigError("model_init_kwargs is only used when model is a path or hub id, not a model object")
        self._model_source = {
            **runs.model_source(model, model_init_kwargs),
            # A reward model object is named by its class and path only (its config may be anything).
            "reward_model": reward_model
            if reward_model is None or isinstance(reward_model, str)
            else f"{type(reward_model).__name__} {getattr(getattr(reward_model, 'config', None), '_name_or_path', '')}",
        }
        self._fingerprint: dict[str, Any] | None = None
        if isinstance(model, str) and processing_class is None:
            processing_class = load_policy_tokenizer(model, model_init_kwargs)
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required when model is not a path")
        self.tokenizer = tokenizer = processing_class
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad = tokenizer.pad_token_id

        # Data first: bad input must fail before any model is loaded.
        self._prepare_data(preferences, demonstrations, eval_preferences)

        # As transformers.Trainer does: the new score head (and anything else random) follows args.seed.
        set_seed(args.seed)
        if isinstance(ref_model, str):
            ref_kwargs = dict(model_init_kwargs or {})
            if ref_model != model:
                ref_kwargs.pop("gguf_file", None)  # the GGUF file names the policy's checkpoint only
            ref_model, _ = load_policy(ref_model, ref_kwargs, load_tokenizer=False)
        if isinstance(model, str):
            model, _ = load_policy(model, model_init_kwargs, load_tokenizer=False)
        self.readout = args.reward_readout or default_readout(reward_model)
        # The reward model starts from the policy as given (before adapters are added).
        reward_model = load_reward_model(model if reward_model is None else reward_model, self.pad)
        try:
            freeze_lower_layers(reward_model, args.reward_freeze_layers)
            check_readout(reward_model, self.readout)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        setattr(reward_model.config, READOUT_CONFIG_KEY, self.readout)  # saved with it
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        if reward_peft_config is not None:
            from peft import get_peft_model

            reward_model = get_peft_model(reward_model, reward_peft_config)
        if ref_model is None and not is_peft(model):
            ref_model = copy.deepcopy(model)
        # PEFT without ref_model: the base model for a fresh adapter, else a frozen copy of the starting one.
        self._ref_adapter = (
            reference.add_reference_adapter(model, announce=self.rank == 0) if ref_model is None else None
        )
        for m in (model, reward_model, ref_model):
            if m is not None and args.disable_dropout:
                disable_dropout(m)

        self.device = args.device
        self.policy = model.to(self.device)
        self.reward_model = reward_model.to(self.device)
        self.ref_model = frozen(ref_model.to(self.device)) if ref_model is not None else None
        # Every process starts from rank 0's weights (a new score head is randomly initialised).
        for m in (self.policy, self.reward_model):
            self._broadcast(m)
        self.stop_tokens = stop_tokens(tokenizer, self.policy, args.eos_token)
        self.generator = generator or HFGenerator(
            pad_token_id=self.pad,
            eos_token_id=self.stop_tokens,
            max_new_tokens=args.max_new_tokens,
            do_sample=True,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            batch_size=args.generation_batch_size,
            backend=args.generation_backend,
        )
        self.gold_reward = gold_reward
        if args.padding_free:
            reason = check_packing(self.policy, self.policy.get_input_embeddings().weight.shape[0])
            if reason:
                kind = getattr(getattr(self.policy, "config", None), "model_type", type(self.policy).__name__)
                raise ConfigError(f"padding_free=True: this {kind} model cannot run packed sequences ({reason})")
        # Reuse the update's policy pass as the "old" log-probs when that is exact (see policy_step);
        # False forces the separate no-grad pass (the equivalence test compares the two).
        self.reuse_policy_pass = True

        policy_updates = args.num_rounds * args.policy_steps_per_round * args.num_ppo_epochs * args.num_mini_batches
        reward_updates = args.reward_pretrain_steps + (
            0 if args.freeze_reward_model else args.num_rounds * args.reward_steps_per_round
        )
        self.policy_optimizer, self.policy_scheduler = self._optimizer(self.policy, args.learning_rate, policy_updates)
        self.reward_optimizer, self.reward_scheduler = self._optimizer(
            self.reward_model, args.reward_learning_rate, max(1, reward_updates)
        )

        self.round = 0
        self.pretrain_done = args.reward_pretrain_steps == 0
        self.nonfinite_skipped = 0
        self.log_history: list[dict[str, float]] = []
        self.timings: dict[str, float] = defaultdict(float)
        self._writer = None
        self.callback_handler = RoundCallbacks(callbacks)

    # ------------------------------------------------------------------ setup
    def _prepare_data(self, preferences: Any, demonstrations: Any, eval_preferences: Any) -> None:
        args, tok = self.args, self.tokenizer
        kw = dict(max_length=args.max_length, max_prompt_length=args.max_prompt_length, eos_token=args.eos_token)
        uses_prefs = args.pref_weight > 0 or args.reward_pretrain_steps > 0
        prefs = demos = None
        if preferences is not None:
            prefs = prepare_preferences(preferences, tok, implicit_prompt_marker=args.implicit_prompt_marker, **kw)
        elif uses_prefs:
            what = f"pref_weight={args.pref_weight}" if args.pref_weight > 0 else "reward_pretrain_steps > 0"
            raise ConfigError(f"{what} but no preferences were given")
        if args.demo_weight > 0:
            if demonstrations is not None:
                demos = prepare_demonstrations(demonstrations, tok, **kw)
            refs = references_as_demonstrations(prefs) if prefs is not None else None
            if refs is not None and args.use_references_as_demonstrations:
                demos = refs if demos is None else datasets.concatenate_datasets([demos, refs])
            if demos is None:
                raise ConfigError(f"demo_weight={args.demo_weight} but no demonstrations were given")
        elif demonstrations is not None:
            warnings.warn("demo_weight=0: the demonstrations are ignored", stacklevel=3)
        if prefs is not None and not uses_prefs:
            warnings.warn("pref_weight=0: the preference pairs are ignored", stacklevel=3)
            prefs = None
        self.eval_preferences = None
        if eval_preferences is not None:
            self.eval_preferences = prepare_preferences(
                eval_preferences, tok, implicit_prompt_marker=args.implicit_prompt_marker, **kw
            )

        # Early stopping of the reward pretraining holds out pairs when none are given.
        self.holdout = self.eval_preferences
        if prefs is not None and args.reward_pretrain_patience is not None and self.holdout is None:
            n_out = max(1, round(len(prefs) * args.reward_holdout_fraction))
            if len(prefs) - n_out < 1:
                raise ConfigError(f"reward_holdout_fraction leaves no training pairs out of {len(prefs)}")
            split = prefs.train_test_split(test_size=n_out, seed=args.seed, shuffle=True)
            prefs, self.holdout = split["train"], split["test"]
        self.preferences, self.demonstrations = prefs, demos

        # The RL prompts: (prompt ids, demonstration index or -1), unique prompts of the sources used.
        pool: list[tuple[list[int], int]] = []
        if args.rl_prompts in ("all", "demonstrations") and demos is not None:
            pool += [(list(p), j) for j, p in enumerate(demos["prompt_ids"])]
        if args.rl_prompts in ("all", "preferences") and prefs is not None:
            seen = {tuple(p) for p, _ in pool}
            for p in prefs["prompt_ids"]:
                if tuple(p) not in seen:
                    seen.add(tuple(p))
                    pool.append((list(p), -1))
        if not pool:
            raise ConfigError(f"rl_prompts='{args.rl_prompts}' but that source is not used or has no prompts")
        self.rl_prompts = pool
        seed = args.seed
        self._samplers = {
            "rl": _Cycler(len(pool), seed, 1),
            "pref": _Cycler(len(prefs), seed, 2) if prefs is not None else None,
            "demo": _Cycler(len(demos), seed, 3) if demos is not None else None,
        }

    def _optimizer(self, model: nn.Module, lr: float, total_steps: int):
        args = self.args
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params,
            lr=lr,
            betas=(args.adam_beta1, args.adam_beta2),
            eps=args.adam_epsilon,
            weight_decay=args.weight_decay,
        )
        scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=args.get_warmup_steps(total_steps),
            num_training_steps=total_steps,
        )
        return optimizer, scheduler

    # ------------------------------------------------------------------ data parallelism
    def _broadcast(self, model: nn.Module) -> None:
        if self.world > 1:
            with torch.no_grad():
                for p in model.parameters():
                    dist.broadcast(p.data, src=0)

    def _sync_grads(self, model: nn.Module) -> None:
        """Average the gradients over processes (what DDP does, without wrapping the model, so
        that generation and adapter switching work on it unchanged)."""
        if self.world == 1:
            return
        for p in _trainable(model).values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(self.world)

    def _average(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics averaged over processes (every process logs the same keys)."""
        if self.world == 1 or not metrics:
            return metrics
        names = sorted(metrics)
        values = torch.tensor([float(metrics[n]) for n in names], dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return dict(zip(names, (values / self.world).tolist()))

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def _autocast(self):
        if self.args.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    # ------------------------------------------------------------------ pieces
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

    # ------------------------------------------------------------------ policy step
    def policy_step(self, prompts: list[list[int]], completions: list[list[int]], step: int) -> dict[str, float]:
        """One RL update (or ``num_ppo_epochs * num_mini_batches`` PPO updates) on the samples
        ``completions`` (``k`` consecutive ones per prompt, ``prompts`` repeated to match)."""
        start = time.perf_counter()
        args, k = self.args, self.args.num_generations
        n = len(completions)
        rows = pad_sequences(prompts, completions, self.pad)
        self.reward_model.eval()
        # With one update per step and no dropout, the update's policy pass (with grad) gives exactly
        # the sampling policy's log-probs, so it doubles as the no-grad "old" pass (one forward fewer).
        single_pass = (
            self.reuse_policy_pass and args.disable_dropout and args.num_ppo_epochs * args.num_mini_batches == 1
        )
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
                sub = {key: value[idx] for key, value in rows.items()}
                idx = idx.to(self.device)
                if single_pass:  # the one mini-batch is all rows, in order
                    tok, sub_mask = tok_with_grad, mask
                else:
                    tok, sub_mask, _ = self._token_logps(self.policy, sub)
                out = losses.clipped_policy_loss(tok, old_tok[idx], advantages[idx], sub_mask, args.cliprange)
                out.loss.backward()
                self._sync_grads(self.policy)
                where = f"round {self.round + 1}, policy step {step + 1}"
                if self._update_is_finite(where, {"reward": raw_scores, "policy/loss": out.loss}, self.policy):
                    if args.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(_trainable(self.policy).values(), args.max_grad_norm)
                    self.policy_optimizer.step()
                    stats["policy/loss"].append(out.loss.item())
                    stats["policy/clip_fraction"].append(out.clip_fraction.item())
                    stats["policy/approx_kl"].append(out.approx_kl.item())
                self.policy_scheduler.step()
                self.policy_optimizer.zero_grad(set_to_none=True)

        lengths = fmask.sum(1)
        metrics = {
            "reward": raw_scores.mean().item(),
            "reward_std": raw_scores.std(unbiased=False).item(),
            "rlhf_reward": rewards.mean().item(),
            "kl": ((old_tok - ref_tok) * fmask).sum().item() / max(1.0, fmask.sum().item()),
            "kl_sequence": (old_logps - ref_logps).mean().item(),
            "entropy": entropy.item(),
            "completions/mean_length": lengths.mean().item(),
            "completions/clipped_ratio": (~has_eos).float().mean().item(),
            "learning_rate": self.policy_scheduler.get_last_lr()[0],
        }
        metrics.update({name: _mean(v) for name, v in stats.items()})
        metrics.update(func_metrics)
        if self.gold_reward is not None:
            texts = [self.tokenizer.batch_decode(x, skip_special_tokens=True) for x in (prompts, completions)]
            gold = self.gold_reward(*texts)
            metrics["gold_reward"] = _mean([float(g) for g in gold])
        self.timings["policy_step"] += time.perf_counter() - start
        return metrics

    # ------------------------------------------------------------------ reward step
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
        metrics: dict[str, float] = {}
        pref_term = demo_term = None
        pairs_first, pairs_second = [], []
        if n_p:
            chosen, rejected = scores[:n_p], scores[n_p : 2 * n_p]
            bt = losses.bradley_terry_loss(chosen, rejected)
            pref_term = bt.loss
            pairs_first.append(chosen), pairs_second.append(rejected)
            metrics.update(
                {
                    "reward_model/loss_pref": bt.loss.item(),
                    "reward_model/pref_accuracy": (bt.margins > 0).float().mean().item(),
                    "reward_model/pref_margin": bt.margins.mean().item(),
                }
            )
        if n_d:
            demo_scores = scores[2 * n_p : 2 * n_p + n_d][torch.tensor(sample_owner, device=scores.device)]
            sample_scores = scores[2 * n_p + n_d : 2 * n_p + n_d + n_s]
            if args.demo_loss == "linear":
                # The linear form is unbounded below: clamp the rewards, as the authors' code does.
                c = args.reward_clamp
                demo_scores, sample_scores = demo_scores.clamp(-c, c), sample_scores.clamp(-c, c)
                d = losses.ml_irl_linear_loss(demo_scores, sample_scores)
            else:
                d = losses.ml_irl_logistic_loss(demo_scores, sample_scores)
            demo_term = d.loss
            pairs_first.append(demo_scores), pairs_second.append(sample_scores)
            metrics.update(
                {
                    "reward_model/loss_demo": d.loss.item(),
                    "reward_model/demo_accuracy": (d.margins > 0).float().mean().item(),
                    "reward_model/demo_margin": d.margins.mean().item(),
                }
            )
        loss = losses.aihf_loss(
            demo_term,
            pref_term,
            args.demo_weight if demo_term is not None else 0.0,
            args.pref_weight if pref_term is not None else 0.0,
        )
        if args.center_rewards_coefficient is not None:
            loss = loss + args.center_rewards_coefficient * losses.center_rewards_loss(
                torch.cat(pairs_first), torch.cat(pairs_second)
            )
        metrics["reward_model/loss"] = loss.item()
        metrics["reward_model/mean_reward"] = scores.mean().item()
        return loss, metrics

    def _reward_update(self, loss: Tensor, metrics: dict[str, float], where: str) -> None:
        loss.backward()
        self._sync_grads(self.reward_model)
        terms = {k: v for k, v in metrics.items() if k.startswith("reward_model/loss") or k.endswith("mean_reward")}
        terms["reward_model/loss"] = loss
        if self._update_is_finite(where, terms, self.reward_model):
            if self.args.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(_trainable(self.reward_model).values(), self.args.max_grad_norm)
            self.reward_optimizer.step()
        self.reward_scheduler.step()
        self.reward_optimizer.zero_grad(set_to_none=True)

    def _update_is_finite(self, where: str, terms: dict[str, Any], model: nn.Module) -> bool:
        """Whether the update about to be applied to ``model`` is finite (after the gradients are
        averaged over processes, so that every process decides alike). If not: raise
        :class:`aihf.NonFiniteError`, or with ``skip_nonfinite_steps`` count it and return False."""
        bad = guards.nonfinite_terms(terms)
        reason = ", ".join(f"'{name}' is {guards.describe(terms[name])}" for name in bad) or None
        if reason is None:
            name = guards.nonfinite_gradient(_trainable(model).items())
            reason = f"the gradient of '{name}' is not finite" if name is not None else None
        if self.world > 1:
            flag = torch.tensor([float(reason is not None)], device=self.device)
            dist.all_reduce(flag)
            if flag.item() > 0 and reason is None:
                reason = "a non-finite value on another process"
        if reason is None:
            return True
        if not self.args.skip_nonfinite_steps:
            found = self._checkpoint_dirs()
            raise guards.nonfinite_error(where, reason, found[-1][1] if found else None)
        self.nonfinite_skipped += 1
        if self.rank == 0:
            guards.report_skip(where, reason, self.nonfinite_skipped)
        return False

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
                self.reward_model, prefs, self.pad, self.args.reward_batch_size, self.readout, end_token_id=self.stop_tokens
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
                best_state = {n: p.detach().clone() for n, p in _trainable(self.reward_model).items()}
            else:
                waited += 1
                if waited >= args.reward_pretrain_patience:
                    break
        if best_state is not None:
            _load_params(self.reward_model, best_state)
            last["reward_pretrain/best_holdout_accuracy"] = best
        last["reward_pretrain/steps"] = step + 1 if args.reward_pretrain_steps else 0
        self.pretrain_done = True
        self._log(last, step=0)
        return last

    # ------------------------------------------------------------------ the round
    def run_round(self) -> dict[str, float]:
        """One round: policy steps, the demonstration prompts' samples, reward steps, evaluation."""
        args, k = self.args, self.args.num_generations
        collected: defaultdict[str, list[float]] = defaultdict(list)
        last_step: list[tuple[int, list[list[int]]]] = []  # (demonstration, its samples) of the last step
        for s in range(args.policy_steps_per_round):
            step = self.round * args.policy_steps_per_round + s
            drawn = self._samplers["rl"].take_shard(args.per_device_train_batch_size, self.world, self.rank)
            chosen = [self.rl_prompts[i] for i in drawn]
            prompts = [p for p, _ in chosen for _ in range(k)]
            completions = self._generate(prompts, stable_seed(args.seed, 5, step, self.rank))
            for name, value in self.policy_step(prompts, completions, step).items():
                collected[name].append(value)
            last_step = [(j, completions[i * k : (i + 1) * k]) for i, (_, j) in enumerate(chosen) if j >= 0]

        if not args.freeze_reward_model and args.reward_steps_per_round > 0:
            batches = self._reward_step_demos(last_step)
            for indices, samples in batches:
                for name, value in self.reward_step(indices, samples).items():
                    collected[name].append(value)
        metrics = self._average({name: _mean(v) for name, v in collected.items()})
        metrics.update(self.evaluate_reward())
        if self.nonfinite_skipped:
            metrics["nonfinite/skipped_steps"] = self.nonfinite_skipped
        self.round += 1
        metrics["round"] = self.round
        return metrics

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

    def train(self, resume_from_checkpoint: str | bool | None = None) -> dict[str, float]:
        """Run the remaining rounds; returns the last round's metrics plus ``train_runtime`` and
        the seconds spent per phase (``time/generation``, ``time/policy_step``, ``time/reward_step``).

        A fresh run in an ``output_dir`` that holds another run raises :class:`aihf.ConfigError`
        unless ``args.overwrite_output_dir`` (see :func:`aihf.llm.runs.check_output_dir`)."""
        args = self.args
        start = time.perf_counter()
        checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        if checkpoint is not None:
            self._check_fingerprint(checkpoint)
            self._load_checkpoint(checkpoint)
        elif not self.log_history:  # a fresh run, not a second train() call on this trainer
            self._claim_output_dir()
        if args.save_strategy in ("steps", "epoch") and self.rank == 0:
            # Trainable weights of both models, each with AdamW's two moments.
            size = sum(guards.checkpoint_bytes(m, full_model=False) for m in (self.policy, self.reward_model))
            saves = args.num_rounds // max(1, int(args.save_steps)) + 1 if args.save_strategy == "steps" else 1
            guards.check_disk_space(args.output_dir, size, guards.checkpoints_at_once(saves, args.save_total_limit))
        if not self.pretrain_done:
            self.pretrain_reward()
        bar = tqdm(
            total=args.num_rounds, initial=self.round, desc="AIHF-RL rounds", disable=args.disable_tqdm or self.rank > 0
        )
        metrics: dict[str, float] = {}
        control = self.callback_handler.call("on_train_begin", self)
        while self.round < args.num_rounds and not control.should_training_stop:
            metrics = self.run_round()
            control = self.callback_handler.call("on_step_end", self)
            bar.update(1)
            bar.set_postfix(reward=round(metrics.get("reward", float("nan")), 3))
            if self.round % max(1, int(args.logging_steps)) == 0 or self.round == args.num_rounds:
                self._log(metrics, step=self.round)
            if args.save_strategy == "steps" and self.round % max(1, int(args.save_steps)) == 0:
                self.save_checkpoint()
        bar.close()
        if args.save_strategy in ("steps", "epoch") and not self._has_checkpoint(self.round):
            self.save_checkpoint()
        self.callback_handler.call("on_train_end", self)
        metrics = dict(metrics)
        metrics["train_runtime"] = time.perf_counter() - start
        metrics.update({f"time/{name}": value for name, value in self.timings.items()})
        if self._writer is not None:
            self._writer.flush()
        return metrics

    # ------------------------------------------------------------------ logging
    def _log(self, metrics: dict[str, float], step: int) -> None:
        entry = {k: v for k, v in metrics.items()}
        entry["step"] = step
        self.log_history.append(entry)
        if self.rank > 0:
            return
        report_to = self.args.report_to or []
        if "tensorboard" in report_to:
            if self._writer is None:
                from torch.utils.tensorboard import SummaryWriter
                from transformers.integrations.integration_utils import default_logdir

                # Where transformers' TensorBoardCallback writes: $TENSORBOARD_LOGGING_DIR or <output_dir>/runs/...
                log_dir = os.getenv("TENSORBOARD_LOGGING_DIR") or os.path.join(self.args.output_dir, default_logdir())
                self._writer = SummaryWriter(log_dir=os.path.expanduser(log_dir))
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and name not in ("round", "step"):
                    self._writer.add_scalar(f"train/{name}", value, step)
        if not self.args.disable_tqdm:
            tqdm.write(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}))

    # ------------------------------------------------------------------ saving
    def save_model(self, output_dir: str | None = None) -> None:
        """The policy (adapters only under PEFT, as ``save_pretrained`` does) and tokenizer in
        ``output_dir``; the standalone reward model in ``output_dir/reward_model``."""
        output_dir = output_dir or self.args.output_dir
        if self.rank > 0:
            self._barrier()
            return
        os.makedirs(output_dir, exist_ok=True)
        with reference.without_reference_adapter(self.policy):
            self.policy.save_pretrained(output_dir)
        self.tokenizer.save_pretrained(output_dir)
        save_reward_model(
            self.reward_model, os.path.join(output_dir, "reward_model"), self.tokenizer, readout=self.readout
        )
        with open(os.path.join(output_dir, "log_history.json"), "w") as f:
            json.dump(self.log_history, f, indent=1)
        policy = self.policy
        with open(os.path.join(output_dir, "README.md"), "w") as f:
            f.write(
                card.render_rl(
                    output_dir=output_dir,
                    base_model=self._model_source["model"],
                    args=self.args,
                    num_preferences=len(self.preferences) if self.preferences is not None else 0,
                    num_demonstrations=len(self.demonstrations) if self.demonstrations is not None else 0,
                    num_eval_preferences=len(self.eval_preferences) if self.eval_preferences is not None else 0,
                    log_history=self.log_history,
                    peft_config=policy.peft_config[policy.active_adapter] if is_peft(policy) else None,
                )
            )
        self._barrier()

    def _run_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of this run records (``aihf_run.json``) and a resumed run must match."""
        if self._fingerprint is None:
            args = self.args
            self._fingerprint = {
                **self._model_source,
                "peft": is_peft(self.policy),
                "reward_peft": is_peft(self.reward_model),
                "preferences": runs.data_digest(self.preferences, ("prompt_ids", "chosen_ids", "rejected_ids")),
                "demonstrations": runs.data_digest(self.demonstrations, ("prompt_ids", "completion_ids")),
                **{name: getattr(args, name, None) for name in RUN_FIELDS},
                # More rounds may follow under the constant schedule (the default); another one is sized by them.
                "num_rounds": None if args.lr_scheduler_type == "constant" else args.num_rounds,
            }
        return self._fingerprint

    def _check_fingerprint(self, checkpoint: str) -> None:
        """Refuse a checkpoint of another run (:mod:`aihf.llm.runs`), before anything of it is loaded."""
        saved = runs.read_fingerprint(checkpoint)
        if saved is None:
            warnings.warn(
                f"{checkpoint} has no {runs.FINGERPRINT}: cannot check that it belongs to this configuration",
                stacklevel=3,
            )
            return
        differ = runs.differences(saved, self._run_fingerprint())
        if differ:
            raise ConfigError(
                f"resume_from_checkpoint: {checkpoint} belongs to another run ({'; '.join(differ)}); "
                "resume with the same settings, or start a fresh run with overwrite_output_dir=True"
            )

    def _claim_output_dir(self) -> None:
        """A fresh run must not mix with another one: refuse an output_dir holding a run (checkpoints or a
        model) unless ``overwrite_output_dir``, which deletes its ``checkpoint-*`` folders first."""
        out = self.args.output_dir
        found = check_output_dir(out, self.args.overwrite_output_dir)
        if found and self.rank == 0:
            for name in found:
                if name.startswith(f"{CHECKPOINT_PREFIX}-"):
                    shutil.rmtree(os.path.join(out, name))
        self._barrier()

    def _checkpoint_dirs(self) -> list[tuple[int, str]]:
        root = self.args.output_dir
        if not os.path.isdir(root):
            return []
        found = []
        for name in os.listdir(root):
            prefix, _, number = name.rpartition("-")
            folder = os.path.join(root, name)
            if prefix == CHECKPOINT_PREFIX and number.isdigit() and os.path.isfile(os.path.join(folder, STATE_FILE)):
                found.append((int(number), folder))
        return sorted(found)

    def _has_checkpoint(self, round_: int) -> bool:
        return any(n == round_ for n, _ in self._checkpoint_dirs())

    def save_checkpoint(self) -> str:
        """Write ``checkpoint-<round>`` atomically: staged in a hidden folder, then renamed into place.

        It holds the trainable weights of policy and reward model, both optimizers and schedulers,
        the samplers' positions, the log history and the torch RNG state. Process 0 writes it
        (every process holds the same weights, optimizer states and sampler positions).
        """
        root = self.args.output_dir
        name = f"{CHECKPOINT_PREFIX}-{self.round}"
        final = guards.inside(root, name)
        self._barrier()
        if self.rank == 0:
            self._write_checkpoint(guards.inside(root, STAGING_DIR, name), final)
        self._barrier()
        return final

    def _write_checkpoint(self, staged: str, final: str) -> None:
        root = self.args.output_dir
        shutil.rmtree(staged, ignore_errors=True)  # left over by a crash
        os.makedirs(staged)
        _save_trainable(self.policy, os.path.join(staged, "policy.safetensors"))
        _save_trainable(self.reward_model, os.path.join(staged, "reward_model.safetensors"))
        for key, obj in (
            ("policy_optimizer", self.policy_optimizer),
            ("policy_scheduler", self.policy_scheduler),
            ("reward_optimizer", self.reward_optimizer),
            ("reward_scheduler", self.reward_scheduler),
        ):
            torch.save(obj.state_dict(), os.path.join(staged, f"{key}.pt"))
        torch.save({"cpu": torch.get_rng_state()}, os.path.join(staged, "rng_state.pt"))
        state = {
            "round": self.round,
            "pretrain_done": self.pretrain_done,
            "nonfinite_skipped": self.nonfinite_skipped,
            "samplers": {k: s.state() for k, s in self._samplers.items() if s is not None},
            "log_history": self.log_history,
            "timings": dict(self.timings),
        }
        with open(os.path.join(staged, STATE_FILE), "w") as f:
            json.dump(state, f)
        runs.write_fingerprint(staged, self._run_fingerprint())
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(staged, final)
        shutil.rmtree(os.path.join(root, STAGING_DIR), ignore_errors=True)
        limit = self.args.save_total_limit
        if limit:
            for _, old in self._checkpoint_dirs()[:-limit]:
                shutil.rmtree(old)

    def _resolve_checkpoint(self, resume: str | bool | None) -> str | None:
        if isinstance(resume, str) and resume.lower() in ("true", "false"):
            resume = resume.lower() == "true"
        if not resume:
            return None
        if resume is True:
            found = self._checkpoint_dirs()
            if not found:
                raise ConfigError(f"resume_from_checkpoint=True but {self.args.output_dir} holds no checkpoint")
            return found[-1][1]
        if not os.path.isfile(os.path.join(resume, STATE_FILE)):
            raise ConfigError(f"resume_from_checkpoint={resume} is not an AIHF-RL checkpoint (no {STATE_FILE})")
        return resume

    def _load_checkpoint(self, folder: str) -> None:
        _load_trainable(self.policy, os.path.join(folder, "policy.safetensors"))
        _load_trainable(self.reward_model, os.path.join(folder, "reward_model.safetensors"))
        for key, obj in (
            ("policy_optimizer", self.policy_optimizer),
            ("policy_scheduler", self.policy_scheduler),
            ("reward_optimizer", self.reward_optimizer),
            ("reward_scheduler", self.reward_scheduler),
        ):
            with refusing_pickles(folder, key.replace("_", " ")):
                state = torch.load(os.path.join(folder, f"{key}.pt"), weights_only=True, map_location="cpu")
            obj.load_state_dict(state)
        with refusing_pickles(folder, "RNG state"):
            torch.set_rng_state(torch.load(os.path.join(folder, "rng_state.pt"), weights_only=True)["cpu"])
        state_file = os.path.join(folder, STATE_FILE)
        with open(state_file) as f:
            state = json.load(f)
        # Checkpoint names and sampler positions come from this file: numbers only.
        self.round = guards.check_int(state.get("round"), "round", state_file)
        self.pretrain_done = bool(state["pretrain_done"])
        self.nonfinite_skipped = guards.check_int(state.get("nonfinite_skipped", 0), "nonfinite_skipped", state_file)
        for key, value in state["samplers"].items():
            if key not in self._samplers or not isinstance(value, list) or len(value) != 2:
                raise ConfigError(f"{state_file}: bad sampler state {key!r}: {value!r}")
            self._samplers[key].load([guards.check_int(v, f"samplers.{key}", state_file) for v in value])
        self.log_history = state["log_history"]
        self.timings = defaultdict(float, state["timings"])


def _load_params(model: nn.Module, state: dict[str, Tensor]) -> None:
    params = _trainable(model)
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


# ---------------------------------------------------------------------------- the classic pipeline


@dataclass
class RLHFPipelineResult:
    model: nn.Module
    reward_model: nn.Module
    sft_trainer: Any
    rl_trainer: AIHFRLTrainer


def sft_args_from_rl(args: AIHFRLConfig, **overrides: Any):
    """An :class:`AIHFConfig` for the SFT stage that shares ``args``' common settings (batch size,
    lengths, precision, logging/saving targets): ``<output_dir>/sft``, demonstration NLL only.
    ``overrides`` (e.g. ``max_steps``, ``learning_rate``) win."""
    from .config import AIHFConfig

    rl_only = {"learning_rate", "logging_steps", "save_steps", "lr_scheduler_type", "beta", "demo_weight", "demo_loss"}
    names = {f.name for f in dataclasses.fields(AIHFConfig) if f.init} & {
        f.name for f in dataclasses.fields(AIHFRLConfig) if f.init
    }
    values = {n: getattr(args, n) for n in names - rl_only}
    values.update(output_dir=os.path.join(args.output_dir, "sft"), pref_weight=0.0, demo_weight=1.0, demo_loss="nll")
    values.update(overrides)
    return AIHFConfig(**values)


def rlhf_stage_args(args: AIHFRLConfig) -> AIHFRLConfig:
    """``args`` turned into the RLHF stage's: ``<output_dir>/rlhf``, preferences only, the reward model
    pretrained (``reward_pretrain_steps``, required > 0) and then frozen."""
    if args.reward_pretrain_steps < 1:
        raise ConfigError("sft_then_rlhf / rlhf needs reward_pretrain_steps > 0 to fit the reward model first")
    return dataclasses.replace(
        args,
        output_dir=os.path.join(args.output_dir, "rlhf"),
        demo_weight=0.0,
        freeze_reward_model=True,
        max_steps=-1,  # these sized the SFT stage; the RL stage counts rounds
        num_train_epochs=3.0,
    )


def sft_then_rlhf(
    model: nn.Module | str,
    args: AIHFRLConfig,
    demonstrations: Any,
    preferences: Any,
    processing_class: Any = None,
    *,
    sft_args: Any = None,
    eval_preferences: Any = None,
    peft_config: Any = None,
    reward_peft_config: Any = None,
    gold_reward: GoldReward | None = None,
    callbacks: list | None = None,
) -> RLHFPipelineResult:
    """The classic pipeline in one call: SFT on the demonstrations (``sft_args``, an :class:`AIHFConfig`
    with ``pref_weight=0``; default :func:`sft_args_from_rl` of ``args``), then a reward model
    initialised from the SFT model and fitted on the preferences (``args.reward_pretrain_steps``,
    early-stopped when ``reward_pretrain_patience`` is set), then KL-regularised RL on that frozen
    reward with the SFT model as reference. Stages write to ``<output_dir>/sft`` (as set in
    ``sft_args``) and ``<output_dir>/rlhf``. ``callbacks`` (``transformers.TrainerCallback``) go to both
    stages' trainers (the RL stage counts rounds as steps, :mod:`aihf.llm.callbacks`).
    """
    from .pipelines import run_sft_stage

    rl_args = rlhf_stage_args(args)  # checked before any training
    sft_args = sft_args if sft_args is not None else sft_args_from_rl(args)
    sft, sft_model = run_sft_stage(
        model, sft_args, demonstrations, preferences, processing_class, peft_config, callbacks
    )
    rl = AIHFRLTrainer(
        sft_model,
        args=rl_args,
        preferences=preferences,
        eval_preferences=eval_preferences,
        processing_class=sft.processing_class,
        peft_config=peft_config,
        reward_peft_config=reward_peft_config,
        gold_reward=gold_reward,
        callbacks=callbacks,
    )
    rl.train()
    rl.save_model()
    return RLHFPipelineResult(rl.policy, rl.reward_model, sft, rl)
