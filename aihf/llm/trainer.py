"""AIHFTrainer: one-stage alignment of a causal LM from demonstrations and preferences.

The policy's implicit reward is ``r = beta * log(pi / pi_ref)``. Each training batch holds
preference pairs and demonstrations, scored in one concatenated forward pass; the loss is
``pref_weight * DPO + demo_weight * demo_term`` (:func:`aihf.losses.aihf_loss`), where the
demonstration term is the NLL (offline AIHF-DPO) or the self-play term against the policy
frozen at the start of each round (online self-play AIHF).
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import os
import random
import shutil
import sys
import warnings
from collections import defaultdict
from typing import Any

import datasets
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, Trainer, TrainerCallback, set_seed
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

from .. import losses
from ..data import (
    AIHFCollator,
    PairedDataset,
    concat_padded,
    end_token,
    match_end_tokens,
    pad_sequences,
    prepare_demonstrations,
    prepare_preferences,
    references_as_demonstrations,
)
from ..errors import ConfigError
from . import card, guards, reference, runs
from .config import AIHFConfig
from .generation import HFGenerator, SampleGenerator
from .loading import is_loadable, load_policy
from .logprobs import check_packing, sequence_logps
from .model_setup import STAGING_DIR, disable_dropout, frozen, is_peft, refusing_pickles, stable_seed, stop_tokens

SELF_PLAY_STATE = "aihf_self_play.json"
SELF_PLAY_SAMPLES = "aihf_self_play_samples_rank{rank}.json"
OPPONENT_WEIGHTS = "aihf_opponent.safetensors"
RUN_STATE = "aihf_state.json"  # running totals that the logs continue after a resume
BASE_MODEL_DIR = "base_model"


def _mean_of(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    return values.float().sum(), values.numel()


def _trl_alias(trl_value: Any, trl_name: str, value: Any, name: str) -> Any:
    if trl_value is None:
        return value
    if value is not None:
        raise ConfigError(f"AIHFTrainer: give {trl_name} or {name}, not both ({trl_name} is read as {name})")
    return trl_value


def _checkpoint_step(checkpoint: str) -> int | str:
    name = os.path.basename(os.path.normpath(checkpoint))
    suffix = name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else "?"


class _IndexedPairs(PairedDataset):
    """:class:`PairedDataset` whose items also say which preference row of which dataset they
    hold, so that precomputed reference log-probs can be looked up (``token`` survives pickling
    into dataloader workers, unlike ``id()``)."""

    _tokens = itertools.count()

    def __init__(self, preferences: Any | None, demonstrations: Any | None):
        super().__init__(preferences, demonstrations)
        self.token = next(self._tokens)

    def __getitem__(self, i: int) -> dict:
        item = super().__getitem__(i)
        item["pref_index"] = i % len(self.preferences) if self.preferences is not None else -1
        item["pref_source"] = self.token
        return item


class _IndexedCollator(AIHFCollator):
    def __call__(self, items: list[dict]) -> dict[str, Any]:
        batch = super().__call__(items)
        batch["pref_index"] = [it["pref_index"] for it in items if it["pref"] is not None]
        batch["pref_source"] = items[0]["pref_source"]
        return batch


def _say_eval_loss_terms(args, train_prefs, train_demos, eval_prefs, eval_demos) -> None:
    """One line when ``eval_loss`` holds fewer terms than the training ``loss`` (an evaluation set of
    one source only), so that selecting a checkpoint on it is no surprise."""
    term = {"preferences": "preference (DPO) term", "demonstrations": "demonstration term"}
    sources = (("preferences", train_prefs, args.pref_weight), ("demonstrations", train_demos, args.demo_weight))
    trained = {n for n, data, w in sources if data is not None and w > 0}
    evaluated = {n for n, data in (("preferences", eval_prefs), ("demonstrations", eval_demos)) if data is not None}
    missing = sorted(trained - evaluated)
    if not missing or args.process_index != 0:
        return
    kept = " and ".join(term[n] for n in sorted(evaluated & trained)) or "no term of the training loss"
    logging.getLogger("aihf").info(
        f"eval_loss is the {kept} alone (no eval_{missing[0]} given), while the training loss also has the "
        f"{term[missing[0]]}: pass eval_{missing[0]}= to evaluate the same objective"
    )


class _NonFiniteGuard(TrainerCallback):
    """Checks each update just before the optimizer applies it (after clipping)."""

    def __init__(self, trainer: AIHFTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer._guard_update()


class AIHFTrainer(Trainer):
    """Align ``model`` with demonstrations and preference pairs in one training stage.

    Args:
        model: a causal LM, or a local path / hub id to load one from.
        ref_model: the frozen reference ``pi_ref``. Default: ``model`` as given: a frozen copy of it;
            for a PEFT model with a fresh (zero) LoRA adapter, the same model with its adapters
            disabled; for one whose adapter is already trained, a frozen copy of that adapter
            (:mod:`aihf.llm.reference`).
        args: an :class:`AIHFConfig`.
        demonstrations / preferences: a ``datasets.Dataset``, a list of dicts or a path to a
            ``.jsonl``/``.json``/``.csv``/``.parquet`` file (formats: :mod:`aihf.data.formats`).
            A source whose weight is 0 may be omitted; it is ignored if given.
        eval_demonstrations / eval_preferences: optional held-out sources for ``evaluate()``;
            the evaluation loss uses the demonstration NLL in every mode (it samples nothing).
        processing_class: the tokenizer (loaded from ``model`` when that is a path). It is
            not modified: when it has no pad token, a copy with ``pad_token = eos_token`` is used.
        peft_config: wrap ``model`` with this PEFT (e.g. LoRA) config; the adapter weights are
            initialised from ``args.seed``.
        generator: self-play sampler, ``generator(model, prompts, seed) -> completions``;
            default :class:`HFGenerator` configured from ``args``.
        model_init_kwargs: keyword arguments for loading ``model`` (and ``ref_model``) when they
            are paths, as in TRL: ``dtype`` (default float32), ``gguf_file`` (a GGUF checkpoint,
            dequantised), ``revision``, ``attn_implementation``, ``trust_remote_code``...
            See :func:`aihf.llm.loading.load_policy`.
        train_dataset / eval_dataset: TRL's names, read as ``preferences`` / ``eval_preferences``
            (what TRL's ``DPOTrainer`` trains on); give ``demonstrations`` separately.

    Every data source is read, validated and tokenised here, so bad input raises
    :class:`aihf.DataError` before any training step or output file. ``train()`` refuses
    (:class:`aihf.ConfigError`) to start a fresh run in an ``output_dir`` that holds another
    run's checkpoints or model unless ``args.overwrite_output_dir``, and resumes only from a
    checkpoint written by the same configuration (model, data, objective, max_steps).
    """

    loss_is_scaled_for_ga = False  # our loss is a per-micro-batch mean

    def __init__(
        self,
        model: nn.Module | str,
        ref_model: nn.Module | str | None = None,
        args: AIHFConfig | None = None,
        demonstrations: Any = None,
        preferences: Any = None,
        eval_demonstrations: Any = None,
        eval_preferences: Any = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        peft_config: Any = None,
        generator: SampleGenerator | None = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        model_init_kwargs: dict[str, Any] | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
    ):
        args = args if args is not None else AIHFConfig(output_dir="aihf-output")
        if not isinstance(args, AIHFConfig):
            raise TypeError(f"args must be an AIHFConfig, got {type(args).__name__}")
        preferences = _trl_alias(train_dataset, "train_dataset", preferences, "preferences")
        eval_preferences = _trl_alias(eval_dataset, "eval_dataset", eval_preferences, "eval_preferences")
        if isinstance(model, str):
            self._model_source = runs.model_source(model, model_init_kwargs)
            model, loaded_tokenizer = load_policy(model, model_init_kwargs, load_tokenizer=processing_class is None)
            processing_class = processing_class or loaded_tokenizer
        else:
            if model_init_kwargs:
                raise ConfigError("model_init_kwargs is only used when model is a path or hub id, not a model object")
            self._model_source = runs.model_source(model)
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required when model is not a path")
        tokenizer = processing_class
        if tokenizer.pad_token_id is None:
            tokenizer = copy.deepcopy(tokenizer)  # never change the caller's object
            tokenizer.pad_token = tokenizer.eos_token
        if isinstance(ref_model, str):
            ref_kwargs = dict(model_init_kwargs or {})
            if ref_model != self._model_source["model"]:
                ref_kwargs.pop("gguf_file", None)  # the GGUF file names the policy's checkpoint only
            ref_model, _ = load_policy(ref_model, ref_kwargs, load_tokenizer=False)

        # Data first: bad input must fail before anything else happens.
        self.demo_weight, self.pref_weight = args.demo_weight, args.pref_weight
        try:
            train_prefs, train_demos = self._prepare_sources(args, tokenizer, preferences, demonstrations, "training")
        except ValueError as e:
            if train_dataset is None or "no training demonstrations" not in str(e):
                raise
            raise ConfigError(
                f"{e}. train_dataset= is read as preference pairs, as TRL's DPOTrainer does: pass demonstrations= "
                "as well, or set demo_weight=0 (DPO)"
            ) from None
        eval_dataset = None
        if eval_preferences is not None or eval_demonstrations is not None:
            eval_prefs, eval_demos = self._prepare_sources(
                args, tokenizer, eval_preferences, eval_demonstrations, "evaluation", required=False
            )
            if eval_prefs is not None or eval_demos is not None:
                eval_dataset = _IndexedPairs(eval_prefs, eval_demos)
                _say_eval_loss_terms(args, train_prefs, train_demos, eval_prefs, eval_demos)

        if peft_config is not None:
            from peft import get_peft_model

            # The adapters' initial weights are drawn from the global RNG: seed it, so that two
            # runs with the same seed start (and so train) identically, as full fine-tuning does.
            set_seed(args.seed)
            model = get_peft_model(model, peft_config)
        if args.disable_dropout:
            disable_dropout(model)
        half = {p.dtype for p in model.parameters() if p.requires_grad} & {torch.float16, torch.bfloat16}
        if half:
            warnings.warn(
                f"trainable parameters are {half.pop()}: AdamW updates below its resolution are lost. Load the model "
                "in float32 and set bf16=True for mixed precision, or train LoRA adapters.",
                stacklevel=2,
            )

        needs_reference = train_prefs is not None or (eval_dataset is not None and eval_dataset.preferences is not None)
        if needs_reference and ref_model is None and not is_peft(model):
            if is_deepspeed_zero3_enabled():
                raise ValueError(
                    "under DeepSpeed ZeRO-3 the policy's weights are partitioned and cannot be copied: pass ref_model "
                    "(e.g. the same checkpoint loaded again; --ref_model_name_or_path on the command line)"
                )
            ref_model = copy.deepcopy(model)
        # A PEFT policy without ref_model: the base model (adapters disabled) when its adapter is
        # fresh, else a frozen copy of the starting adapter (the model as given).
        self._ref_adapter = (
            reference.add_reference_adapter(model, announce=args.process_index == 0)
            if needs_reference and ref_model is None
            else None
        )
        self.ref_model = frozen(ref_model) if ref_model is not None else None
        if self.ref_model is not None and args.disable_dropout:
            disable_dropout(self.ref_model)

        super().__init__(
            model=model,
            args=args,
            data_collator=_IndexedCollator(tokenizer.pad_token_id, args.pad_to_multiple_of),
            train_dataset=_IndexedPairs(train_prefs, train_demos),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        if self.ref_model is not None:
            self.ref_model = self._prepare_frozen(self.ref_model)
        vocab_size = self.model.get_input_embeddings().weight.shape[0]
        for option in ("padding_free", "prefix_sharing"):
            reason = getattr(args, option) and check_packing(self.model, vocab_size, option == "prefix_sharing")
            if reason:
                kind = getattr(getattr(self.model, "config", None), "model_type", type(self.model).__name__)
                raise ConfigError(f"{option}=True: this {kind} model cannot run packed sequences ({reason})")
        self._precomputed_ref: dict[int, torch.Tensor] = {}
        if args.precompute_ref_log_probs:
            for dataset in (self.train_dataset, self.eval_dataset):
                if dataset is not None and dataset.preferences is not None:
                    self._precomputed_ref[dataset.token] = self._precompute_reference(dataset.preferences)
            self.ref_model = None  # no longer needed: free its memory
        self._total_tokens = 0
        self._fingerprint: dict[str, Any] | None = None

        self.self_play = args.demo_loss == "self_play" and train_demos is not None
        self._opponent: nn.Module | None = None
        self._round: int | None = None
        self._samples: dict[int, tuple[list[int], float, float]] = {}
        self._gen_calls = (-1, 0)  # (global_step, calls during that step): seeds generation
        if self.self_play:
            if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
                raise NotImplementedError("self-play generation under DeepSpeed ZeRO-3 is not supported yet")
            self._opponent = self._prepare_frozen(copy.deepcopy(self.model))
            self._stop_ids = stop_tokens(tokenizer, self.model, args.eos_token)
            self.generator = generator or HFGenerator(
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=self._stop_ids,
                max_new_tokens=args.max_new_tokens,
                do_sample=args.do_sample,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                batch_size=args.generation_batch_size,
                backend=args.generation_backend,
            )
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list)}
        self._eval_totals: dict[str, list[float]] = {}
        self._nonfinite: str | None = None  # what was not finite in the update being accumulated
        self._nonfinite_skipped = 0
        self.add_callback(_NonFiniteGuard(self))

    # ------------------------------------------------------------------ data
    def _prepare_sources(self, args, tokenizer, preferences, demonstrations, purpose, required=True):
        """Prepared (preferences, demonstrations) for ``purpose``. A source whose weight is 0 is
        dropped, except that preference rows still lend their gold references as demonstrations."""
        kw = dict(max_length=args.max_length, max_prompt_length=args.max_prompt_length, eos_token=args.eos_token)
        prefs = demos = refs = None
        if preferences is not None:
            prefs = prepare_preferences(
                preferences, tokenizer, implicit_prompt_marker=args.implicit_prompt_marker, **kw
            )
        elif args.pref_weight > 0 and required:
            raise ConfigError(f"pref_weight={args.pref_weight} but no {purpose} preferences were given")
        if args.demo_weight > 0:
            if demonstrations is not None:
                demos = prepare_demonstrations(demonstrations, tokenizer, **kw)
            if prefs is not None and args.use_references_as_demonstrations:
                refs = references_as_demonstrations(prefs)
            if refs is not None:
                demos = refs if demos is None else datasets.concatenate_datasets([demos, refs])
            if demos is None and required:
                raise ConfigError(
                    f"demo_weight={args.demo_weight} but no {purpose} demonstrations were given "
                    "(nor preference rows with a 'reference')"
                )
        elif demonstrations is not None:
            warnings.warn(f"demo_weight=0: the {purpose} demonstrations are ignored", stacklevel=3)
        if args.pref_weight == 0 and prefs is not None:
            if refs is None:
                warnings.warn(f"pref_weight=0: the {purpose} preference pairs are ignored", stacklevel=3)
            prefs = None
        return prefs, demos

    def _prepare_frozen(self, model: nn.Module) -> nn.Module:
        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            # Not exercised by the test suite (no GPU in CI): under ZeRO-3 a frozen model's
            # parameters are partitioned too, so it runs inside an inference engine that
            # gathers them, as DeepSpeed documents for frozen models.
            import deepspeed

            config = copy.deepcopy(self.accelerator.state.deepspeed_plugin.deepspeed_config)
            config.pop("optimizer", None)
            config.pop("scheduler", None)
            engine, *_ = deepspeed.initialize(model=model, config=config)
            return frozen(engine)
        return frozen(model.to(self.accelerator.device))

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        n_p, n_d = inputs["num_pairs"], inputs["num_demos"]
        # Items past num_real are copies that complete the last batch of an epoch under data
        # parallel: they are scored (every process must run the same graph) but weigh nothing.
        real = inputs.get("num_real", max(n_p, n_d))
        r_p, r_d = min(n_p, real), min(n_d, real)
        batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "completion_mask")}
        self_play = self.self_play and mode == "train" and n_d > 0
        if self_play:
            opponent_demo, opponent_sample, demo_mask, sample_rows = self._self_play_samples(inputs)
            batch["completion_mask"] = torch.cat([batch["completion_mask"][: 2 * n_p], demo_mask])
            batch = concat_padded(batch, sample_rows, self.processing_class.pad_token_id)

        logps, num_tokens, logits_sums = sequence_logps(model, **batch, return_logits_sums=True, **self._fast(n_p))
        demo_rows = slice(2 * n_p, 2 * n_p + n_d)
        shares = self._loss_shares(inputs, r_p, r_d, int(num_tokens[demo_rows][:r_d].sum()))
        stats: dict[str, tuple[torch.Tensor, Any]] = {}

        pref_term = None
        if n_p:
            ref_chosen, ref_rejected = self._reference_for(inputs, batch, n_p)
            chosen, rejected = slice(0, n_p), slice(n_p, 2 * n_p)
            pref = losses.implicit_preference_loss(
                self.args.loss_type,
                logps[chosen],
                logps[rejected],
                ref_chosen.to(logps.dtype),
                ref_rejected.to(logps.dtype),
                self.args.beta,
                label_smoothing=self.args.label_smoothing,
                chosen_num_tokens=num_tokens[chosen],
                rejected_num_tokens=num_tokens[rejected],
            )
            pref_term = pref.per_example[:r_p].sum() / shares["pairs"]
            stats.update(
                {
                    "rewards/chosen": _mean_of(pref.chosen_rewards[:r_p]),
                    "rewards/rejected": _mean_of(pref.rejected_rewards[:r_p]),
                    "rewards/accuracies": _mean_of((pref.margins[:r_p] > 0).float()),
                    "rewards/margins": _mean_of(pref.margins[:r_p]),
                    "logps/chosen": _mean_of(logps[chosen][:r_p].detach()),
                    "logps/rejected": _mean_of(logps[rejected][:r_p].detach()),
                    # TRL's logits/*: the vocabulary-mean logit, averaged over completion tokens
                    "logits/chosen": (logits_sums[chosen][:r_p].sum(), num_tokens[chosen][:r_p].sum()),
                    "logits/rejected": (logits_sums[rejected][:r_p].sum(), num_tokens[rejected][:r_p].sum()),
                    "loss/pref": _mean_of(pref.per_example[:r_p].detach()),
                }
            )

        demo_term = None
        if n_d:
            demo_logps, demo_tokens = logps[demo_rows], num_tokens[demo_rows]
            stats["demo/logps"] = _mean_of(demo_logps[:r_d].detach())
            if self_play:
                sample_logps = logps[2 * n_p + n_d :]
                demo = losses.self_play_loss(demo_logps, sample_logps, opponent_demo, opponent_sample, self.args.beta)
                demo_term = demo.per_example[:r_d].sum() / shares["demos"]
                stats.update(
                    {
                        "demo/sample_logps": _mean_of(sample_logps[:r_d].detach()),
                        "demo/rewards": _mean_of(demo.chosen_rewards[:r_d]),
                        "demo/sample_rewards": _mean_of(demo.rejected_rewards[:r_d]),
                        "demo/margins": _mean_of(demo.margins[:r_d]),
                        "demo/accuracies": _mean_of((demo.margins[:r_d] > 0).float()),
                        "loss/demo": _mean_of(demo.per_example[:r_d].detach()),
                    }
                )
            else:
                demo = losses.demonstration_nll_loss(
                    demo_logps[:r_d], demo_tokens[:r_d], normalizer=shares["demo_tokens"]
                )
                demo_term = demo.loss
                if mode == "train":
                    # Each process's share of the step's token-mean NLL: their mean over processes and
                    # micro-batches is the NLL of the global batch.
                    stats["demo/nll"] = stats["loss/demo"] = (demo.loss.detach(), 1)
                else:  # summed over the whole eval set, divided once by its token count
                    nll_sum = demo.per_example[:r_d].detach().float().sum()
                    stats["demo/nll"] = stats["loss/demo"] = (nll_sum, demo_tokens[:r_d].sum())

        # An evaluation set may hold only one of the two sources: combine the terms present.
        loss = losses.aihf_loss(
            demo_term,
            pref_term,
            self.demo_weight if demo_term is not None else 0.0,
            self.pref_weight if pref_term is not None else 0.0,
        )
        if mode == "train" and self._check_terms({"loss/pref": pref_term, "loss/demo": demo_term}):
            # A skipped micro-batch's metrics would be NaN: count them 0 times (every process
            # still joins _record's collective).
            stats = {name: (torch.zeros((), device=loss.device), 0) for name in stats}
        if mode == "train":
            real_rows = [*range(r_p), *range(n_p, n_p + r_p), *range(2 * n_p, 2 * n_p + r_d)]
            if self_play:
                real_rows += range(2 * n_p + n_d, 2 * n_p + n_d + r_d)
            stats["num_tokens"] = (batch["attention_mask"][real_rows].sum(), 0)
        self._record(mode, stats)
        if self_play and mode == "train":
            self._metrics[mode]["self_play/round"].append(float(self._round))
        return (loss, {"logps": logps.detach()}) if return_outputs else loss

    # ------------------------------------------------------------------ non-finite values
    def _check_terms(self, terms: dict[str, torch.Tensor | None]) -> bool:
        """Whether a loss term is not finite: raises :class:`aihf.NonFiniteError`, or with
        ``skip_nonfinite_steps`` marks the update to be dropped and returns True."""
        bad = guards.nonfinite_terms(terms)
        if not bad:
            return False
        what = ", ".join(f"loss term '{name}' is {guards.describe(terms[name])}" for name in bad)
        if not self.args.skip_nonfinite_steps:
            raise guards.nonfinite_error(f"step {self.state.global_step + 1}", what, self._last_checkpoint())
        self._nonfinite = self._nonfinite or what
        return True

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        # Checked after each micro-batch's backward, before clipping (which spreads one inf to
        # every gradient) so the message can name the parameter. Under fp16 the GradScaler skips
        # steps with inf gradients itself (it meets them while calibrating its scale); DeepSpeed
        # keeps gradients out of p.grad.
        if self._nonfinite is None and not self.args.fp16 and not self.is_deepspeed_enabled:
            name = guards.nonfinite_gradient(self.model.named_parameters())
            if name is not None:
                self._nonfinite = f"the gradient of '{name}' is not finite"
        return loss

    def _guard_update(self) -> None:
        """Before each optimizer step: stop, or drop the update, if a loss term or a gradient
        was not finite (every process takes the same decision)."""
        reason, self._nonfinite = self._nonfinite, None
        if self.accelerator.num_processes > 1:
            flag = torch.tensor([float(reason is not None)], device=self.accelerator.device)
            if self.accelerator.reduce(flag, reduction="sum").item() > 0 and reason is None:
                reason = "a non-finite value on another process"
        if reason is None:
            return
        where = f"step {self.state.global_step + 1}"
        if not self.args.skip_nonfinite_steps:
            raise guards.nonfinite_error(where, reason, self._last_checkpoint())
        if not self.args.fp16:
            # AdamW leaves parameters without a gradient alone: no update, no moment change.
            self.model.zero_grad(set_to_none=True)
        self._nonfinite_skipped += 1
        if self.is_world_process_zero():
            guards.report_skip(where, reason, self._nonfinite_skipped)

    def _last_checkpoint(self) -> str | None:
        out = self.args.output_dir
        return get_last_checkpoint(out) if os.path.isdir(out) else None

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch = next(epoch_iterator)
            except StopIteration:
                break
            batch["num_real"] = self._real_items(batch)  # read now: the dataloader's state moves on
            batch_samples.append(batch)
        # What the whole optimizer step holds (all micro-batches, all processes, copies left
        # out), so that each loss term is a mean over the global batch whatever the accumulation,
        # the parallelism or an uneven last batch.
        counts = [0, 0, 0]
        for b in batch_samples:
            r_p, r_d = min(b["num_pairs"], b["num_real"]), min(b["num_demos"], b["num_real"])
            demo_mask = b["completion_mask"][2 * b["num_pairs"] : 2 * b["num_pairs"] + r_d]
            counts = [counts[0] + r_p, counts[1] + r_d, counts[2] + int(demo_mask.sum())]
        totals = self.accelerator.gather(torch.tensor([counts], device=device)).sum(0).tolist()
        for b in batch_samples:
            b["step_totals"] = [*totals, len(batch_samples)]
        return batch_samples, None

    def _real_items(self, batch: dict[str, Any]) -> int:
        """How many of the batch's items are data rather than padding. To give every process
        a full last batch, accelerate completes the epoch's last global batch with copies of its
        first items; in rank-major order the first ``remainder`` items are the real ones."""
        n = max(batch["num_pairs"], batch["num_demos"])
        state = self.accelerator.gradient_state
        if not state.end_of_dataloader or state.remainder <= 0:
            return n
        return min(n, max(0, state.remainder - self.accelerator.process_index * n))

    def _loss_shares(self, inputs: dict[str, Any], r_p: int, r_d: int, demo_tokens: int) -> dict[str, float]:
        """Denominators of this micro-batch's sums such that, after the Trainer divides each
        micro-batch loss by the accumulation steps and data parallelism averages gradients over
        processes, the step optimises each term's sum over the global batch divided by its
        global count (pairs, demonstrations, demonstration tokens)."""
        totals = inputs.get("step_totals")
        if totals is None:  # evaluation, or a direct call: this micro-batch on its own
            local = torch.tensor([[r_p, r_d, demo_tokens]], device=self.accelerator.device)
            totals = [*self.accelerator.gather(local).sum(0).tolist(), 1]
        pairs, demos, tokens, micro_batches = totals
        scale = micro_batches * self.accelerator.num_processes
        return {"pairs": max(pairs, 1) / scale, "demos": max(demos, 1) / scale, "demo_tokens": max(tokens, 1) / scale}

    def _reference_for(self, inputs: dict[str, Any], batch: dict[str, torch.Tensor], n_p: int):
        table = self._precomputed_ref.get(inputs.get("pref_source"))
        if table is not None:
            ref = table[torch.as_tensor(inputs["pref_index"], device=table.device)]
            return ref[:, 0], ref[:, 1]
        if self.ref_model is None and self.args.precompute_ref_log_probs and not is_peft(self._policy()):
            raise RuntimeError(
                "precompute_ref_log_probs=True scored only the datasets given to AIHFTrainer and freed the reference "
                "model; pass other evaluation data to AIHFTrainer(eval_preferences=...)"
            )
        return self._reference_logps(batch, 2 * n_p).chunk(2)

    def _fast(self, num_pairs: int) -> dict[str, Any]:
        """``sequence_logps`` speed options for a batch whose first ``2 * num_pairs`` rows are pairs."""
        shared = num_pairs if self.args.prefix_sharing else 0
        return {"padding_free": self.args.padding_free or self.args.prefix_sharing, "shared_prompt_pairs": shared}

    @torch.no_grad()
    def _reference_logps(self, batch: dict[str, torch.Tensor], rows: int) -> torch.Tensor:
        part = {k: v[:rows] for k, v in batch.items()}
        # Under mixed precision the reference runs in the policy's autocast (as TRL does), so that
        # the implicit rewards are exactly 0 while the policy still equals the reference.
        if self.ref_model is not None:
            with self.accelerator.autocast():
                return sequence_logps(self.ref_model, **part, **self._fast(rows // 2))[0]
        # PEFT: the policy with its adapters switched off, or with the starting adapter's copy selected.
        unwrapped = self.accelerator.unwrap_model(self.model)
        with reference.reference_mode(unwrapped, self._ref_adapter), self.accelerator.autocast():
            return sequence_logps(unwrapped, **part, **self._fast(rows // 2))[0]

    @torch.no_grad()
    def _precompute_reference(self, prefs: Any) -> torch.Tensor:
        """``(P, 2)`` reference log-probs of every pair's chosen and rejected answer (TRL's
        ``precompute_ref_log_probs``); each process scores its share of the rows."""
        rank, world, device = self.accelerator.process_index, self.accelerator.num_processes, self.accelerator.device
        size = self.args.precompute_ref_batch_size or self.args.per_device_eval_batch_size
        mine = list(range(rank, len(prefs), world))
        table = torch.zeros(len(prefs), 2, device=device)
        pad = self.processing_class.pad_token_id
        for start in tqdm(
            range(0, len(mine), size), desc="Reference log-probs", disable=not self.is_local_process_zero()
        ):
            indices = mine[start : start + size]
            rows = [prefs[i] for i in indices]
            batch = pad_sequences(
                [r["prompt_ids"] for r in rows] * 2,
                [r["chosen_ids"] for r in rows] + [r["rejected_ids"] for r in rows],
                pad,
            )
            chosen, rejected = self._reference_logps({k: v.to(device) for k, v in batch.items()}, 2 * len(rows)).chunk(
                2
            )
            table[indices] = torch.stack([chosen, rejected], dim=1).float()
        return self.accelerator.reduce(table, reduction="sum")

    def _record(self, mode: str, stats: dict[str, tuple[torch.Tensor, Any]]) -> None:
        """Log each metric as (sum over all processes) / (count over all processes), in one
        collective; ``num_tokens`` is a running total of the non-padding tokens trained on."""
        if not stats:
            return
        device = self.accelerator.device
        table = torch.stack(
            [
                torch.stack([torch.as_tensor(v, device=device).float(), torch.as_tensor(c, device=device).float()])
                for v, c in stats.values()
            ]
        )
        totals = self.accelerator.gather(table.unsqueeze(0)).sum(0).tolist()
        for name, (value, count) in zip(stats, totals):
            if mode == "eval":  # (sum, count) over the whole evaluation: see evaluation_loop
                running = self._eval_totals.setdefault(name, [0.0, 0.0])
                running[0] += value
                running[1] += count
            elif name == "num_tokens":
                self._total_tokens += int(value)
                self._metrics[mode][name] = [float(self._total_tokens)]
            elif count > 0:
                self._metrics[mode][name].append(value / count)

    # ------------------------------------------------------------------ self-play
    def _round_length(self) -> int:
        if self.args.self_play_round_steps:
            return self.args.self_play_round_steps
        per_step = self.args.train_batch_size * self.args.gradient_accumulation_steps * self.args.world_size
        steps_per_epoch = math.ceil(len(self.train_dataset) / per_step)
        return max(1, math.ceil(self.args.self_play_round_epochs * steps_per_epoch))

    def _policy(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def _start_round_if_due(self) -> None:
        current = self.state.global_step // self._round_length()
        if current != self._round:
            self._opponent.load_state_dict(self._policy().state_dict())
            self._round = current
            self._samples.clear()

    @torch.no_grad()
    def _self_play_samples(self, inputs: dict[str, Any]):
        """Opponent samples for the batch's demonstrations (cached per round), the opponent's
        log-probs of each demonstration and sample, the demonstrations' completion mask and the
        samples' rows. An end token counts in a (demonstration, sample) pair only when both have
        one (:func:`aihf.data.match_end_tokens`), for the opponent's log-probs and the policy's."""
        self._start_round_if_due()
        step, calls = self._gen_calls
        calls = calls + 1 if step == self.state.global_step else 0
        self._gen_calls = (self.state.global_step, calls)
        seed = stable_seed(self.args.seed, self._round, self.state.global_step, calls, self.args.process_index)

        n_p = inputs["num_pairs"]
        indices, prompts = inputs["demo_index"], inputs["demo_prompt_ids"]
        pad = self.processing_class.pad_token_id
        regenerate = (
            self.args.self_play_regen_prob > 0 and random.Random(seed).random() < self.args.self_play_regen_prob
        )
        todo = [k for k, j in enumerate(indices) if regenerate or j not in self._samples]
        if todo:
            samples = self.generator(self._opponent, [prompts[k] for k in todo], seed)
            limit = self.args.max_length
            samples = [s[: limit - len(prompts[k])] if limit else s for k, s in zip(todo, samples)]
            end = end_token(self.processing_class, self.args.eos_token).id
            samples = [s or [end] for s in samples]  # never an empty answer: the data's end token alone
            demo_rows = {
                key: inputs[key][2 * n_p :][todo] for key in ("input_ids", "attention_mask", "completion_mask")
            }
            sample_rows = pad_sequences([prompts[k] for k in todo], samples, pad)
            sample_rows = {k: v.to(self.accelerator.device) for k, v in sample_rows.items()}
            both = concat_padded(*match_end_tokens(demo_rows, sample_rows, self._stop_ids), pad)
            with self.accelerator.autocast():
                scored = sequence_logps(self._opponent, **both, **self._fast(0))[0].tolist()
            for i, (k, sample) in enumerate(zip(todo, samples)):
                self._samples[indices[k]] = (sample, scored[i], scored[len(todo) + i])
        cached = [self._samples[j] for j in indices]
        device = self.accelerator.device
        sample_rows = pad_sequences(prompts, [c[0] for c in cached], pad)
        sample_rows = {k: v.to(device) for k, v in sample_rows.items()}
        demo_rows = {key: inputs[key][2 * n_p :] for key in ("input_ids", "attention_mask", "completion_mask")}
        demo_rows, sample_rows = match_end_tokens(demo_rows, sample_rows, self._stop_ids)
        opponent_demo = torch.tensor([c[1] for c in cached], device=device)
        opponent_sample = torch.tensor([c[2] for c in cached], device=device)
        return opponent_demo, opponent_sample, demo_rows["completion_mask"], sample_rows

    # ------------------------------------------------------------------ logging / eval
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if not self.model.training:  # evaluation: its metrics are already in logs (evaluation_loop)
            super().log(logs, start_time)
            return
        averaged = {name: sum(v) / len(v) for name, v in self._metrics["train"].items() if v}
        if "self_play/round" in averaged:
            averaged["self_play/round"] = self._metrics["train"]["self_play/round"][-1]
        if self._nonfinite_skipped:
            averaged["nonfinite/skipped_steps"] = self._nonfinite_skipped
        logs.update(averaged)
        super().log(logs, start_time)
        self._metrics["train"].clear()

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """``Trainer.evaluation_loop`` with every metric, ``<prefix>_loss`` included, computed over the
        whole evaluation set: sums and counts (pairs, demonstrations, completion tokens) are added
        up over batches and processes and divided once, so the values do not depend on the batch
        size, the number of processes or how completion lengths fall into batches."""
        self._eval_totals: dict[str, list[float]] = {}
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        means = {name: total / count for name, (total, count) in self._eval_totals.items() if count > 0}
        self._eval_totals = {}
        terms = {"demo": means.get("demo/nll"), "pref": means.get("loss/pref")}
        if terms["demo"] is not None or terms["pref"] is not None:
            means["loss"] = float(
                losses.aihf_loss(
                    None if terms["demo"] is None else torch.tensor(terms["demo"], dtype=torch.float64),
                    None if terms["pref"] is None else torch.tensor(terms["pref"], dtype=torch.float64),
                    self.demo_weight if terms["demo"] is not None else 0.0,
                    self.pref_weight if terms["pref"] is not None else 0.0,
                )
            )
        output.metrics.update({f"{metric_key_prefix}_{name}": value for name, value in means.items()})
        return output

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs["num_real"] = self._real_items(inputs)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ runs and outputs
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        """``Trainer.train`` after checking that the run does not mix with another one.

        A fresh run (``resume_from_checkpoint`` None/False) in an ``output_dir`` that holds
        checkpoints or a model raises :class:`aihf.ConfigError`, unless
        ``args.overwrite_output_dir``, which deletes the old ``checkpoint-*`` folders first.
        ``resume_from_checkpoint=True`` takes the last checkpoint of ``output_dir``; any
        checkpoint must have been written by this configuration (see :mod:`aihf.llm.runs`).
        """
        if isinstance(resume_from_checkpoint, str) and resume_from_checkpoint.lower() in ("true", "false"):
            resume_from_checkpoint = resume_from_checkpoint.lower() == "true"
        if resume_from_checkpoint:
            resume_from_checkpoint = self._checked_checkpoint(resume_from_checkpoint)
        else:
            resume_from_checkpoint = None
            self._claim_output_dir()
        self._check_disk_space()
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _check_disk_space(self) -> None:
        """Fail before the first step when the checkpoints this run keeps cannot fit on disk."""
        args = self.args
        if args.save_strategy == "no" or not args.should_save:
            return
        per_step = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        steps = (
            args.max_steps
            if args.max_steps > 0
            else math.ceil(math.ceil(len(self.train_dataset) / per_step) * args.num_train_epochs)
        )
        if args.save_strategy == "epoch":
            saves = math.ceil(args.num_train_epochs) if args.max_steps <= 0 else 1
        else:
            every = args.save_steps if args.save_steps >= 1 else math.ceil(args.save_steps * steps)
            saves = steps // max(1, int(every)) + 1  # and the final step's
        policy = self._policy()
        size = guards.checkpoint_bytes(policy, full_model=not is_peft(policy))
        if self.self_play:
            size += sum(p.numel() * p.element_size() for p in self._opponent.parameters())
        guards.check_disk_space(args.output_dir, size, guards.checkpoints_at_once(saves, args.save_total_limit))

    def _run_fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = runs.fingerprint(
                self._model_source,
                self.train_dataset.preferences,
                self.train_dataset.demonstrations,
                self.args,
                peft=is_peft(self._policy()),
            )
        return self._fingerprint

    def _claim_output_dir(self) -> None:
        out = self.args.output_dir
        found = runs.check_output_dir(out, self.args.overwrite_output_dir)
        if not found:
            return
        if self.args.should_save:
            for name in found:
                if name.startswith(f"{PREFIX_CHECKPOINT_DIR}-"):
                    shutil.rmtree(os.path.join(out, name))
        self.accelerator.wait_for_everyone()

    def _checked_checkpoint(self, checkpoint: str | bool) -> str:
        if checkpoint is True:
            found = get_last_checkpoint(self.args.output_dir) if os.path.isdir(self.args.output_dir) else None
            if found is None:
                raise ConfigError(
                    f"resume_from_checkpoint=true but output_dir {self.args.output_dir} holds no checkpoint-* folder"
                )
            checkpoint = found
        if not os.path.isdir(checkpoint):
            raise ConfigError(f"resume_from_checkpoint: {checkpoint} is not a checkpoint folder")
        state_file = os.path.join(checkpoint, "trainer_state.json")
        if os.path.isfile(state_file):
            # The resumed run names its next checkpoints after this step: it must be a number.
            with open(state_file) as f:
                guards.check_int(json.load(f).get("global_step"), "global_step", state_file)
        saved = runs.read_fingerprint(checkpoint)
        if saved is None:
            warnings.warn(
                f"{checkpoint} has no {runs.FINGERPRINT}: cannot check that it belongs to this configuration",
                stacklevel=3,
            )
        else:
            differ = runs.differences(saved, self._run_fingerprint())
            if differ:
                raise ConfigError(
                    f"resume_from_checkpoint: {checkpoint} belongs to another run ({'; '.join(differ)}); "
                    "resume with the same settings, or start a fresh run with overwrite_output_dir=True"
                )
        if self.is_world_process_zero():
            step = _checkpoint_step(checkpoint)
            print(f"aihf: resuming from {checkpoint} (step {step})", file=sys.stderr, flush=True)
        return checkpoint

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model (or adapter) and tokenizer, plus, for a user's call, a model card
        ``README.md``. An adapter whose base cannot be loaded by name (a GGUF folder, a model
        built in memory) first gets that base saved once as ``<output_dir>/base_model`` and its
        config pointed at it, so that ``AutoPeftModelForCausalLM.from_pretrained`` works on the
        output and on every checkpoint."""
        self._ensure_loadable_base()
        super().save_model(output_dir, _internal_call)
        if _internal_call or not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        with open(os.path.join(output_dir, "README.md"), "w") as f:
            f.write(self._model_card(output_dir, self._policy()))

    def _save(self, output_dir: str | None = None, state_dict=None):
        with reference.without_reference_adapter(self._policy()):
            super()._save(output_dir, state_dict)

    def _ensure_loadable_base(self) -> None:
        policy = self._policy()
        if not is_peft(policy) or is_loadable(policy.peft_config[policy.active_adapter].base_model_name_or_path):
            return
        base_dir = os.path.abspath(os.path.join(self.args.output_dir, BASE_MODEL_DIR))
        if self.args.should_save:
            # The base weights as a plain model: LoRA layers keep them under ".base_layer", and
            # modules_to_save keep the original under ".original_module".
            state = {}
            for key, value in policy.get_base_model().state_dict().items():
                if ".lora_" in key or ".modules_to_save." in key:
                    continue
                state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = value
            policy.get_base_model().save_pretrained(base_dir, state_dict=state)
            self.processing_class.save_pretrained(base_dir)
        for adapter_config in policy.peft_config.values():
            adapter_config.base_model_name_or_path = base_dir

    def _model_card(self, output_dir: str, policy: nn.Module) -> str:
        def size(dataset, part):
            source = getattr(dataset, part, None) if dataset is not None else None
            return len(source) if source is not None else 0

        peft_config = policy.peft_config[policy.active_adapter] if is_peft(policy) else None
        return card.render(
            output_dir=output_dir,
            base_model=self._model_source["model"],
            gguf_file=self._model_source.get("gguf_file"),
            args=self.args,
            num_preferences=size(self.train_dataset, "preferences"),
            num_demonstrations=size(self.train_dataset, "demonstrations"),
            num_eval_preferences=size(self.eval_dataset, "preferences"),
            num_eval_demonstrations=size(self.eval_dataset, "demonstrations"),
            log_history=self.state.log_history,
            peft_config=peft_config,
        )

    # ------------------------------------------------------------------ checkpoints
    def _get_output_dir(self, trial):
        staging = getattr(self, "_staging_root", None)
        return staging if staging is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial):
        """Write the checkpoint under a staging folder, then rename it into place, so that a
        crash mid-save never leaves a ``checkpoint-N`` that ``resume_from_checkpoint`` would take."""
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(run_dir, STAGING_DIR)
        staged, final = guards.inside(staging_root, name), guards.inside(run_dir, name)
        if self.args.should_save and os.path.isdir(staged):
            shutil.rmtree(staged)  # left over by a crash
        self.accelerator.wait_for_everyone()
        self._staging_root = staging_root
        push, self.args.push_to_hub = self.args.push_to_hub, False  # push the final folder, below
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
            self.args.push_to_hub = push
        if self.state.best_model_checkpoint and self.state.best_model_checkpoint.startswith(staging_root):
            self.state.best_model_checkpoint = self.state.best_model_checkpoint.replace(staging_root, run_dir, 1)
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        if self.self_play:
            self._save_self_play_state(staged)
        if self.args.should_save:
            os.makedirs(staged, exist_ok=True)
            runs.write_fingerprint(staged, self._run_fingerprint())
            with open(os.path.join(staged, RUN_STATE), "w") as f:
                json.dump({"nonfinite_skipped": self._nonfinite_skipped, "num_tokens": self._total_tokens}, f)
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()
        if push:
            self._push_from_checkpoint(final)

    def _save_self_play_state(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)  # other ranks may get here before rank 0 created it
        samples = {str(j): list(v) for j, v in self._samples.items()}
        with open(os.path.join(folder, SELF_PLAY_SAMPLES.format(rank=self.args.process_index)), "w") as f:
            json.dump(samples, f)
        if self.args.should_save:
            with open(os.path.join(folder, SELF_PLAY_STATE), "w") as f:
                json.dump({"round": self._round, "gen_calls": list(self._gen_calls)}, f)
            save_model(self._opponent, os.path.join(folder, OPPONENT_WEIGHTS))

    def _load_rng_state(self, checkpoint):
        # Every resume path (plain, FSDP, DeepSpeed) calls this before the first resumed step,
        # unlike _load_from_checkpoint, so the self-play state is restored here.
        with refusing_pickles(checkpoint, "RNG state"):
            super()._load_rng_state(checkpoint)
        if checkpoint is None:
            return
        state_file = os.path.join(checkpoint, RUN_STATE)
        if os.path.isfile(state_file):
            with open(state_file) as f:
                state = json.load(f)
            self._nonfinite_skipped = guards.check_int(
                state.get("nonfinite_skipped", 0), "nonfinite_skipped", state_file
            )
            self._total_tokens = guards.check_int(state.get("num_tokens", 0), "num_tokens", state_file)
        if self.self_play:
            self._load_self_play_state(checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        # transformers 5 loads optimizer.pt / scheduler.pt with torch.load(weights_only=True).
        with refusing_pickles(checkpoint, "optimizer or scheduler state"):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_self_play_state(self, checkpoint: str) -> None:
        state_file = os.path.join(checkpoint, SELF_PLAY_STATE)
        weights = os.path.join(checkpoint, OPPONENT_WEIGHTS)
        if not (os.path.isfile(state_file) and os.path.isfile(weights)):
            warnings.warn(f"{checkpoint} has no self-play state; the next step starts a new round", stacklevel=2)
            return
        with open(state_file) as f:
            state = json.load(f)
        gen_calls = state.get("gen_calls")
        if not isinstance(gen_calls, list) or len(gen_calls) != 2:
            raise ConfigError(f"{state_file}: 'gen_calls' must be a list of two integers, got {gen_calls!r}")
        gen_calls = tuple(guards.check_int(v, "gen_calls", state_file, minimum=-1) for v in gen_calls)
        round_ = guards.check_int(state.get("round"), "round", state_file)
        # Loaded on the CPU, then copied into the opponent's parameters wherever they live.
        load_model(self._opponent, weights, device="cpu")
        self._round = round_
        self._gen_calls = gen_calls
        self._samples = {}
        samples_file = os.path.join(checkpoint, SELF_PLAY_SAMPLES.format(rank=self.args.process_index))
        if os.path.isfile(samples_file):  # absent when resuming on more processes: those resample
            with open(samples_file) as f:
                self._samples = {int(j): (v[0], v[1], v[2]) for j, v in json.load(f).items()}
