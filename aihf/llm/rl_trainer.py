"""AIHFRLTrainer: an explicit reward model and the policy learned jointly (method.md, instantiation 1).

Each round:

1. **policy steps** -- KL-regularised RL on the current reward model with a frozen reference:
   ``k = num_generations`` samples per prompt, reward ``r(x, y) - beta * log(pi/pi_ref)(y|x)``,
   RLOO's leave-one-out baseline, one REINFORCE update (or PPO-clip updates over
   ``num_ppo_epochs`` epochs of the same samples) (:mod:`aihf.llm.rl_policy_step`);
2. **policy samples for the demonstration prompts**, all of one age -- by default the samples that
   the round's last policy step drew on demonstration prompts (one update older than the policy);
   with ``fresh_reward_samples`` each reward step takes ``reward_demo_batch_size`` demonstrations
   with samples drawn from the policy after the round's policy steps;
3. **reward steps** on ``pref_weight * BT(preferences) + demo_weight * D(demonstration vs sample)``
   (:mod:`aihf.llm.rl_reward_step`).

The policy's reward may add programmatic ``reward_funcs`` to the reward model's score
(:mod:`aihf.llm.reward_funcs`).

The round loop is AIHF-RL's own, but it runs on ``transformers``' training machinery: a
``TrainerState`` (``state.global_step`` counts rounds, ``max_steps`` bounds them), the Trainer's
``CallbackHandler`` with its default flow, ``report_to`` integrations and progress callbacks
(:mod:`aihf.llm.callbacks`), and ``trainer_state.json`` in every checkpoint. It is not a
``transformers.Trainer`` subclass: a round holds two models, two optimizers and a generation phase, and
exact resume (a killed and resumed run equals an uninterrupted one bit for bit, also under torchrun)
rests on AIHF-RL's own seeded samplers and checkpoint (:mod:`aihf.llm.rl_checkpoint`).
Under torchrun each process takes its share of every step's prompts and preference pairs
(:mod:`aihf.llm.rl_parallel`).
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import datasets
import torch
import torch.distributed as dist
from torch import nn
from transformers import PreTrainedTokenizerBase, TrainerControl, TrainerState, get_scheduler, set_seed

from ..errors import ConfigError
from . import card, guards, reference, runs
from .callbacks import rl_callback_handler, round_interval, size_state
from .generation import HFGenerator, SampleGenerator
from .loading import load_policy, load_policy_tokenizer
from .logprobs import check_packing
from .model_setup import disable_dropout, frozen, is_peft, stable_seed, stop_tokens, with_pad_token
from .reward_funcs import RewardFunc, as_func_list, resolve_weights
from .reward_model import READOUT_CONFIG_KEY, check_readout, default_readout, freeze_lower_layers, load_reward_model
from .reward_model import save_reward_model
from .rl_checkpoint import CHECKPOINT_PREFIX, RUN_FIELDS, STATE_FILE, CheckpointMixin
from .rl_config import ROUND_FIELDS, UNUSED_TRAINING_ARGUMENTS, AIHFRLConfig, unused_setting_error
from .rl_data import is_demonstrations, is_prompt_only, prepare_rl_data
from .rl_parallel import DataParallelMixin
from .rl_policy_step import PolicyStepMixin, mean
from .rl_reward_step import RewardStepMixin

__all__ = [
    "CHECKPOINT_PREFIX",
    "RUN_FIELDS",
    "STATE_FILE",
    "AIHFRLTrainer",
]
GoldReward = Callable[[list[str], list[str]], list[float]]

class AIHFRLTrainer(DataParallelMixin, PolicyStepMixin, RewardStepMixin, CheckpointMixin):
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
        train_dataset / eval_dataset: TRL's names. ``train_dataset`` is the preferences, or, when its
            rows hold only a ``prompt`` (TRL's prompt-only format), prompts added to the RL prompts;
            ``eval_dataset`` is ``eval_preferences``. Giving both names of one source, or demonstrations
            (``completion`` / ``messages`` rows) as ``train_dataset``, raises :class:`aihf.ConfigError`.
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
        callbacks: ``transformers.TrainerCallback`` objects (or classes), called after the Trainer's
            default ones (flow, ``report_to`` integrations, progress) with ``model=`` the policy; one step
            is one round (:mod:`aihf.llm.callbacks`).

    ``args.per_device_train_batch_size`` counts *prompts* per policy step and process, each sampled
    ``num_generations`` times (TRL counts completions); with ``gradient_accumulation_steps = g`` a policy
    step takes ``g`` times as many prompts and runs its forward/backward passes in ``g`` parts. ``max_steps``
    (when > 0) is the number of rounds, replacing ``num_rounds``. ``train()`` returns the last round's
    metrics; ``state`` is a ``transformers.TrainerState`` (``state.log_history``, ``state.global_step``).

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
        train_dataset: Any = None,
        eval_dataset: Any = None,
    ):
        args = args if args is not None else AIHFRLConfig(output_dir="aihf-rl-output")
        if not isinstance(args, AIHFRLConfig):
            raise TypeError(f"args must be an AIHFRLConfig, got {type(args).__name__}")
        unused = unused_setting_error(args, [n for n in ROUND_FIELDS if n in UNUSED_TRAINING_ARGUMENTS])
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
        self.tokenizer = tokenizer = with_pad_token(processing_class)
        self.pad = tokenizer.pad_token_id

        # Data first: bad input must fail before any model is loaded.
        prompts = None
        if train_dataset is not None:
            if preferences is not None:
                raise ConfigError("train_dataset and preferences name the same data: give one of them")
            if is_demonstrations(train_dataset):
                raise ConfigError(
                    "train_dataset holds demonstrations (completion or messages rows), but AIHF-RL reads "
                    "train_dataset as preference pairs (or prompt-only rows): pass them as demonstrations="
                )
            if is_prompt_only(train_dataset):
                prompts = train_dataset
            else:
                preferences = train_dataset
        if eval_dataset is not None:
            if eval_preferences is not None:
                raise ConfigError("eval_dataset and eval_preferences name the same data: give one of them")
            eval_preferences = eval_dataset
        data = prepare_rl_data(args, tokenizer, preferences, demonstrations, eval_preferences, prompts)
        self._prompts_digest = None
        if prompts is not None:  # prompt-only rows change the RL prompts: a resumed run must have the same
            pool = datasets.Dataset.from_dict({"prompt_ids": [p for p, j in data.rl_prompts if j < 0]})
            self._prompts_digest = runs.data_digest(pool, ("prompt_ids",))
        self.preferences, self.demonstrations = data.preferences, data.demonstrations
        self.eval_preferences, self.holdout = data.eval_preferences, data.holdout
        if self.eval_preferences is None and (args.eval_strategy != "no" or args.eval_on_start):
            # As transformers.Trainer: an evaluation schedule with nothing to evaluate is a mistake.
            shown = "eval_on_start=True" if args.eval_strategy == "no" else f"eval_strategy={args.eval_strategy.value!r}"
            raise ConfigError(f"{shown} but no eval_preferences (or eval_dataset) were given")
        self.rl_prompts, self._samplers = data.rl_prompts, data.samplers

        # As transformers.Trainer does: the new score head (and anything else random) follows args.seed.
        set_seed(args.seed)
        if isinstance(ref_model, str):
            ref_kwargs = dict(model_init_kwargs or {})
            if ref_model != model:
                ref_kwargs.pop("gguf_file", None)  # the GGUF file names the policy's checkpoint only
            ref_model, _ = load_policy(ref_model, ref_kwargs, load_tokenizer=False)
        if isinstance(model, str):
            model, _ = load_policy(model, model_init_kwargs, load_tokenizer=False)
        if reward_model is None and args.freeze_reward_model and args.reward_pretrain_steps == 0:
            raise ConfigError(
                "freeze_reward_model=True with reward_pretrain_steps=0 would run RL on an untrained reward model: "
                "pass a trained reward_model= (RL on a fixed reward, as TRL's RLOOTrainer) or set reward_pretrain_steps"
            )
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

        policy_updates = self.num_rounds * args.policy_steps_per_round * args.num_ppo_epochs * args.num_mini_batches
        reward_updates = args.reward_pretrain_steps + (
            0 if args.freeze_reward_model else self.num_rounds * args.reward_steps_per_round
        )
        self.policy_optimizer, self.policy_scheduler = self._optimizer(self.policy, args.learning_rate, policy_updates)
        self.reward_optimizer, self.reward_scheduler = self._optimizer(
            self.reward_model, args.reward_learning_rate, max(1, reward_updates)
        )

        self.state = TrainerState(
            is_local_process_zero=args.local_process_index == 0, is_world_process_zero=self.rank == 0
        )
        self.control = TrainerControl()
        self.pretrain_done = args.reward_pretrain_steps == 0
        self.nonfinite_skipped = 0
        self.round_tokens = 0
        self.timings: dict[str, float] = defaultdict(float)
        self.callback_handler = rl_callback_handler(
            callbacks, args, self.policy, tokenizer, self.policy_optimizer, self.policy_scheduler
        )
        self.control = self.callback_handler.on_init_end(args, self.state, self.control)

    @property
    def num_rounds(self) -> int:
        """Rounds of the run: ``args.max_steps`` when > 0 (as the Trainer's ``max_steps`` wins over epochs),
        else ``args.num_rounds``."""
        return self.args.max_steps if self.args.max_steps > 0 else self.args.num_rounds

    @property
    def round(self) -> int:
        """Rounds done: ``state.global_step``."""
        return self.state.global_step

    @round.setter
    def round(self, value: int) -> None:
        self.state.global_step = value

    @property
    def log_history(self) -> list[dict[str, float]]:
        """``state.log_history``: one entry per logged round (and one for the reward pretraining), each with
        its ``step`` (rounds done)."""
        return self.state.log_history

    def add_callback(self, callback) -> None:
        """Add a ``TrainerCallback`` (object or class), as ``transformers.Trainer.add_callback``."""
        self.callback_handler.add_callback(callback)

    def _event(self, name: str, **kwargs) -> TrainerControl:
        self.control = getattr(self.callback_handler, name)(self.args, self.state, self.control, **kwargs)
        return self.control

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

    # ------------------------------------------------------------------ the round
    def run_round(self) -> dict[str, float]:
        """One round: policy steps, the demonstration prompts' samples, reward steps, evaluation.
        Returns the round's metrics (averaged over its steps and over processes)."""
        args, k = self.args, self.args.num_generations
        collected: defaultdict[str, list[float]] = defaultdict(list)
        last_step: list[tuple[int, list[list[int]]]] = []  # (demonstration, its samples) of the last step
        # With gradient accumulation a policy step takes that many batches of prompts (TRL's effective batch).
        per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
        self.round_tokens = 0
        for s in range(args.policy_steps_per_round):
            step = self.round * args.policy_steps_per_round + s
            drawn = self._samplers["rl"].take_shard(per_step, self.world, self.rank)
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
        metrics = self._average({name: mean(v) for name, v in collected.items()})
        self.state.num_input_tokens_seen += int(self._sum_over_processes(self.round_tokens))
        metrics["num_tokens"] = self.state.num_input_tokens_seen
        if self._evaluates_after(self.round + 1):
            metrics.update(self.evaluate_reward())
        if self.nonfinite_skipped:
            metrics["nonfinite/skipped_steps"] = self.nonfinite_skipped
        self.round += 1
        metrics["round"] = self.round
        return metrics

    def _evaluates_after(self, round_: int) -> bool:
        """Whether round ``round_`` (1-based) ends with the reward model's evaluation on ``eval_preferences``:
        every round under ``eval_strategy='no'`` (AIHF-RL's default), else every ``eval_steps`` rounds from
        ``eval_delay`` on, and the last round."""
        args = self.args
        if self.eval_preferences is None:
            return False
        if args.eval_strategy == "no":
            return True
        every = round_interval(args.eval_steps, self.num_rounds)
        return round_ >= args.eval_delay and (round_ % every == 0 or round_ == self.num_rounds)

    def train(self, resume_from_checkpoint: str | bool | None = None) -> dict[str, float]:
        """Run the remaining rounds; returns the last round's metrics plus ``train_runtime`` and
        the seconds spent per phase (``time/generation``, ``time/policy_step``, ``time/reward_step``).

        Callbacks see each round as a step; ``DefaultFlowCallback`` logs every ``logging_steps`` rounds
        (and the last round unless ``logging_strategy='no'``) and saves every ``save_steps`` rounds.
        A fresh run in an ``output_dir`` that holds another run raises :class:`aihf.ConfigError`
        unless ``args.overwrite_output_dir`` (see :func:`aihf.llm.runs.check_output_dir`)."""
        args = self.args
        start = time.perf_counter()
        checkpoint = self._resolve_checkpoint(resume_from_checkpoint)
        if checkpoint is not None:
            self._check_fingerprint(checkpoint)
            self._load_checkpoint(checkpoint)
        elif self.round == 0 and not self.log_history:  # a fresh run, not a second train() call on this trainer
            self._claim_output_dir()
        rounds = self.num_rounds
        if args.save_strategy in ("steps", "epoch") and self.rank == 0:
            # Trainable weights of both models, each with AdamW's two moments.
            size = sum(guards.checkpoint_bytes(m, full_model=False) for m in (self.policy, self.reward_model))
            saves = rounds // max(1, int(args.save_steps)) + 1 if args.save_strategy == "steps" else 1
            guards.check_disk_space(args.output_dir, size, guards.checkpoints_at_once(saves, args.save_total_limit))
        size_state(self.state, args, rounds, args.per_device_train_batch_size * args.gradient_accumulation_steps)
        control = self._event("on_train_begin")
        if not self.pretrain_done:
            self.pretrain_reward()
        if args.eval_on_start and self.round == 0 and self.eval_preferences is not None:
            evaluated = self.evaluate_reward()
            self._log(evaluated)
            control = self._event("on_evaluate", metrics=evaluated)
        metrics: dict[str, float] = {}
        while self.round < rounds and not control.should_training_stop:
            self._event("on_step_begin")
            metrics = self.run_round()
            control = self._event("on_step_end")
            if self.round == rounds and args.logging_strategy != "no":
                control.should_log = True  # the last round is always in the history
            if control.should_log:
                self._log(metrics)
            # As the Trainer orders them: log, evaluate, save (the evaluation ran in the round, and is logged with it).
            evaluated = {k: v for k, v in metrics.items() if k.startswith("reward/eval_")}
            if evaluated:
                control = self._event("on_evaluate", metrics=evaluated)
            if control.should_save and args.save_strategy == "steps":
                self.save_checkpoint()
        if args.save_strategy in ("steps", "epoch") and not self._has_checkpoint(self.round):
            self.save_checkpoint()
        self._event("on_train_end")
        metrics = dict(metrics)
        metrics["train_runtime"] = time.perf_counter() - start
        metrics.update({f"time/{name}": value for name, value in self.timings.items()})
        return metrics

    def _log(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Append ``metrics`` with their ``step`` (default: rounds done) to ``state.log_history`` and call
        ``on_log`` (the integrations write them; process 0 only)."""
        entry = dict(metrics)
        entry["step"] = self.round if step is None else step
        self.state.log_history.append(entry)
        self._event("on_log", logs=dict(metrics))

    def save_checkpoint(self) -> str:
        """Write ``checkpoint-<round>`` (:meth:`CheckpointMixin.write_round_checkpoint`) and call ``on_save``."""
        folder = self.write_round_checkpoint()
        self._event("on_save")
        return folder

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
