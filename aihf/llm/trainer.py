"""AIHFTrainer: one-stage alignment of a causal LM from demonstrations and preferences.

The policy's implicit reward is ``r = beta * log(pi / pi_ref)``. Each training batch holds
preference pairs and demonstrations, scored in one concatenated forward pass; the loss is
``pref_weight * DPO + demo_weight * demo_term`` (:func:`aihf.losses.aihf_loss`), where the
demonstration term is the NLL (offline AIHF-DPO) or the self-play term against the policy
frozen at the start of each round (online self-play AIHF).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import defaultdict
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, Trainer, set_seed
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

from .. import losses
from ..data import (
    BatchLayout,
    IndexedCollator,
    IndexedPairs,
    concat_padded,
    end_token,
    pad_sequences,
    prepare_weighted_sources,
)
from ..errors import ConfigError
from . import reference, runs
from .checkpointing import CheckpointingMixin
from .config import AIHFConfig
from .generation import HFGenerator, SampleGenerator
from .loading import load_policy
from .logprobs import check_packing, sequence_logps
from .model_setup import disable_dropout, frozen, is_peft, stop_tokens, with_pad_token
from .nonfinite import NonFiniteMixin
from .self_play import SelfPlayState, round_length
from .trl_compat import (
    SyncRefModelCallback,
    check_eval_terms,
    model_init_kwargs_for,
    named_eval_sources,
    refuse_trainer_arguments,
    trl_alias,
)


def _mean_of(values: torch.Tensor) -> tuple[torch.Tensor, int]:
    return values.float().sum(), values.numel()


SYNCED_REFERENCE = "aihf_reference.safetensors"  # the TR-DPO reference (sync_ref_model) of a checkpoint


class AIHFTrainer(NonFiniteMixin, CheckpointingMixin, Trainer):
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
            are paths, as in TRL (merged over ``args.model_init_kwargs``): ``dtype`` (default
            float32), ``gguf_file`` (a GGUF checkpoint, dequantised), ``revision``,
            ``attn_implementation``, ``trust_remote_code``...
            See :func:`aihf.llm.loading.load_policy`.
        train_dataset / eval_dataset: TRL's names, read as ``preferences`` / ``eval_preferences``
            (what TRL's ``DPOTrainer`` trains on); give ``demonstrations`` separately. A dict of
            evaluation sets (``eval_demonstrations`` too, by the same names) is evaluated set by set
            with the prefix ``eval_<name>_``, as TRL does.
        quantization_config: added to the loading keyword arguments of a model given by path.
        data_collator / compute_metrics: TRL's arguments, refused with :class:`aihf.ConfigError`
            (aihf batches its rows itself; its evaluation has no predictions).

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
        data_collator: Any = None,
        compute_metrics: Any = None,
        quantization_config: Any = None,
    ):
        args = args if args is not None else AIHFConfig(output_dir="aihf-output")
        if not isinstance(args, AIHFConfig):
            raise TypeError(f"args must be an AIHFConfig, got {type(args).__name__}")
        refuse_trainer_arguments(data_collator, compute_metrics)
        preferences = trl_alias(train_dataset, "train_dataset", preferences, "preferences")
        eval_preferences = trl_alias(eval_dataset, "eval_dataset", eval_preferences, "eval_preferences")
        model_init_kwargs = model_init_kwargs_for(args, model, model_init_kwargs, quantization_config)
        if isinstance(model, str):
            self._model_source = runs.model_source(model, model_init_kwargs)
            model, loaded_tokenizer = load_policy(model, model_init_kwargs, load_tokenizer=processing_class is None)
            processing_class = processing_class or loaded_tokenizer
        else:
            self._model_source = runs.model_source(model)
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required when model is not a path")
        tokenizer = with_pad_token(processing_class)
        if isinstance(ref_model, str):
            ref_kwargs = dict(model_init_kwargs or {})
            if ref_model != self._model_source["model"]:
                ref_kwargs.pop("gguf_file", None)  # the GGUF file names the policy's checkpoint only
            ref_model, _ = load_policy(ref_model, ref_kwargs, load_tokenizer=False)

        # Data first: bad input must fail before anything else happens.
        self.demo_weight, self.pref_weight = args.demo_weight, args.pref_weight
        try:
            train_prefs, train_demos = prepare_weighted_sources(
                args, tokenizer, preferences, demonstrations, "training"
            )
        except ValueError as e:
            if train_dataset is None or "no training demonstrations" not in str(e):
                raise
            raise ConfigError(
                f"{e}. train_dataset= is read as preference pairs, as TRL's DPOTrainer does: pass demonstrations= "
                "as well, or set demo_weight=0 (DPO)"
            ) from None
        eval_sets = self._prepare_eval_sets(
            args, tokenizer, eval_preferences, eval_demonstrations, train_prefs, train_demos
        )
        eval_dataset = eval_sets.get(None, eval_sets or None)  # one set, a dict of named sets (TRL), or none

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

        needs_reference = train_prefs is not None or any(d.preferences is not None for d in eval_sets.values())
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
            data_collator=IndexedCollator(tokenizer.pad_token_id, args.pad_to_multiple_of),
            train_dataset=IndexedPairs(train_prefs, train_demos),
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
            for dataset in (self.train_dataset, *eval_sets.values()):
                if dataset.preferences is not None:
                    self._precomputed_ref[dataset.token] = self._precompute_reference(dataset.preferences)
            self.ref_model = None  # no longer needed: free its memory
        self._total_tokens = 0
        self._fingerprint: dict[str, Any] | None = None
        if args.sync_ref_model:
            if not needs_reference:
                raise ConfigError("sync_ref_model=True: no preference term (pref_weight=0), so no reference to update")
            if self.ref_model is None:
                raise ConfigError(
                    "sync_ref_model=True needs a reference model of its own: pass ref_model (a PEFT policy's "
                    "reference is its own base weights)"
                )
            alpha, every = args.ref_model_mixup_alpha, args.ref_model_sync_steps
            self.add_callback(SyncRefModelCallback(self._policy, self.ref_model, alpha, every))

        self.self_play = args.demo_loss == "self_play" and train_demos is not None
        self.self_play_state: SelfPlayState | None = None
        if self.self_play:
            if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
                raise NotImplementedError("self-play generation under DeepSpeed ZeRO-3 is not supported yet")
            stop_ids = stop_tokens(tokenizer, self.model, args.eos_token)
            self.self_play_state = SelfPlayState(self._prepare_frozen(copy.deepcopy(self.model)), stop_ids)
            self.generator = generator or HFGenerator(
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stop_ids,
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
        self._init_nonfinite()

    # ------------------------------------------------------------------ data
    def _prepare_eval_sets(self, args, tokenizer, eval_prefs, eval_demos, train_prefs, train_demos) -> dict:
        """``{name: IndexedPairs}`` of the evaluation sources (name None for a single set; TRL's dict of
        named sets otherwise), each checked against the training objective (:func:`check_eval_terms`)."""
        sources = (("preferences", train_prefs, args.pref_weight), ("demonstrations", train_demos, args.demo_weight))
        trained = {n for n, data, w in sources if data is not None and w > 0}
        sets = {}
        for name, (prefs, demos) in named_eval_sources(eval_prefs, eval_demos).items():
            purpose = "evaluation" if name is None else f"evaluation set '{name}'"
            prefs, demos = prepare_weighted_sources(args, tokenizer, prefs, demos, purpose, required=False)
            if prefs is not None or demos is not None:
                sets[name] = IndexedPairs(prefs, demos)
                evaluated = {n for n, data in (("preferences", prefs), ("demonstrations", demos)) if data is not None}
                check_eval_terms(args, trained, evaluated, name)
        return sets

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
        layout = BatchLayout.of(inputs)
        n_p, n_d = layout.num_pairs, layout.num_demos
        # Items past num_real are copies that complete the last batch of an epoch under data
        # parallel: they are scored (every process must run the same graph) but weigh nothing.
        real = inputs.get("num_real", max(n_p, n_d))
        r_p, r_d = min(n_p, real), min(n_d, real)
        batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "completion_mask")}
        self_play = self.self_play and mode == "train" and n_d > 0
        if self_play:
            opponent_demo, opponent_sample, demo_mask, sample_rows = self._self_play_samples(inputs)
            batch["completion_mask"] = torch.cat([batch["completion_mask"][layout.pairs], demo_mask])
            batch = concat_padded(batch, sample_rows, self.processing_class.pad_token_id)
            layout = BatchLayout.of(inputs, num_samples=n_d)

        logps, num_tokens, token_sums = sequence_logps(model, **batch, return_token_stats=True, **self._fast(n_p))
        shares = self._loss_shares(inputs, r_p, r_d, int(num_tokens[layout.demos][:r_d].sum()))
        stats: dict[str, tuple[torch.Tensor, Any]] = {}

        pref_term = None
        if n_p:
            ref_chosen, ref_rejected = self._reference_for(inputs, batch, layout)
            chosen, rejected = layout.chosen, layout.rejected
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
                loss_weights=self.args.loss_weights,
            )
            if self.args.use_weighting:
                wpo = losses.wpo_weights(logps, token_sums[:, 3].to(logps.dtype), num_tokens)
                pref = pref._replace(per_example=pref.per_example * wpo[chosen] * wpo[rejected])
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
                    "logits/chosen": (token_sums[chosen][:r_p, 0].sum(), num_tokens[chosen][:r_p].sum()),
                    "logits/rejected": (token_sums[rejected][:r_p, 0].sum(), num_tokens[rejected][:r_p].sum()),
                    "loss/pref": _mean_of(pref.per_example[:r_p].detach()),
                }
            )

        demo_term = None
        if n_d:
            demo_logps, demo_tokens = logps[layout.demos], num_tokens[layout.demos]
            stats["demo/logps"] = _mean_of(demo_logps[:r_d].detach())
            if self_play:
                sample_logps = logps[layout.samples]
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

        real_rows = layout.real(r_p, r_d)
        # TRL's entropy (all completion tokens) and mean_token_accuracy (the demonstrations' tokens, as
        # SFTTrainer; without demonstrations the chosen answers', as DPOTrainer).
        stats["entropy"] = (token_sums[real_rows, 1].sum(), num_tokens[real_rows].sum())
        accuracy_rows = list(range(layout.demos.start, layout.demos.start + r_d) if n_d else range(r_p))
        stats["mean_token_accuracy"] = (token_sums[accuracy_rows, 2].sum(), num_tokens[accuracy_rows].sum())

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
            stats["num_tokens"] = (batch["attention_mask"][real_rows].sum(), 0)
        self._record(mode, stats)
        if self_play and mode == "train":
            self._metrics[mode]["self_play/round"].append(float(self.self_play_state.round))
        return (loss, {"logps": logps.detach()}) if return_outputs else loss

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
            demo_mask = b["completion_mask"][BatchLayout.of(b).demos][:r_d]
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

    def _reference_for(self, inputs: dict[str, Any], batch: dict[str, torch.Tensor], layout: BatchLayout):
        table = self._precomputed_ref.get(inputs.get("pref_source"))
        if table is not None:
            ref = table[torch.as_tensor(inputs["pref_index"], device=table.device)]
            return ref[:, 0], ref[:, 1]
        if self.ref_model is None and self.args.precompute_ref_log_probs and not is_peft(self._policy()):
            raise RuntimeError(
                "precompute_ref_log_probs=True scored only the datasets given to AIHFTrainer and freed the reference "
                "model; pass other evaluation data to AIHFTrainer(eval_preferences=...)"
            )
        return self._reference_logps(batch, layout.pairs.stop).chunk(2)

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
    @torch.no_grad()
    def _self_play_samples(self, inputs: dict[str, Any]):
        """:meth:`SelfPlayState.samples_for` the batch's demonstrations, starting a round when one is due."""
        state = self.self_play_state
        steps_per_round = round_length(self.args, len(self.train_dataset))
        state.start_round_if_due(self.state.global_step, steps_per_round, self._policy())
        seed = state.next_seed(self.args.seed, self.state.global_step, self.args.process_index)
        demos = BatchLayout.of(inputs).demos
        return state.samples_for(
            {key: inputs[key][demos] for key in ("input_ids", "attention_mask", "completion_mask")},
            inputs["demo_index"],
            inputs["demo_prompt_ids"],
            generator=self.generator,
            seed=seed,
            regen_prob=self.args.self_play_regen_prob,
            max_length=self.args.max_length,
            end_token_id=end_token(self.processing_class, self.args.eos_token).id,
            pad_token_id=self.processing_class.pad_token_id,
            device=self.accelerator.device,
            autocast=self.accelerator.autocast,
            logps_options=self._fast(0),
        )

    def _extra_checkpoint_bytes(self) -> int:
        size = self.self_play_state.nbytes() if self.self_play else 0
        if self.args.sync_ref_model:
            size += sum(p.numel() * p.element_size() for p in self.ref_model.parameters())
        return size

    def _save_extra_state(self, folder: str) -> None:
        if self.self_play:
            self.self_play_state.save(folder, self.args.process_index, self.args.should_save)
        if self.args.sync_ref_model and self.args.should_save:  # TR-DPO's reference moves: resume needs it
            os.makedirs(folder, exist_ok=True)
            save_model(self.ref_model, os.path.join(folder, SYNCED_REFERENCE))

    def _load_extra_state(self, checkpoint: str) -> None:
        if self.self_play:
            self.self_play_state.load(checkpoint, self.args.process_index)
        if self.args.sync_ref_model:
            weights = os.path.join(checkpoint, SYNCED_REFERENCE)
            if not os.path.isfile(weights):
                raise ConfigError(f"sync_ref_model=True: {checkpoint} has no {SYNCED_REFERENCE} to resume from")
            load_model(self.ref_model, weights, device="cpu")

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
        means["num_tokens"] = float(self._total_tokens)  # TRL's eval_num_tokens: tokens trained on so far
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

