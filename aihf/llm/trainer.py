"""AIHFTrainer: one-stage alignment of a causal LM from demonstrations and preferences.

The policy's implicit reward is ``r = beta * log(pi / pi_ref)``. Each training batch holds
preference pairs and demonstrations, scored in one concatenated forward pass; the loss is
``pref_weight * DPO + demo_weight * demo_term`` (:func:`aihf.losses.aihf_loss`), where the
demonstration term is the NLL (offline AIHF-DPO) or the self-play term against the policy
frozen at the start of each round (online self-play AIHF).
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import shutil
import warnings
import zlib
from collections import defaultdict
from typing import Any

import datasets
import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, Trainer
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from .. import losses
from ..data import (
    AIHFCollator,
    PairedDataset,
    concat_padded,
    end_token,
    pad_sequences,
    prepare_demonstrations,
    prepare_preferences,
    references_as_demonstrations,
)
from .config import AIHFConfig
from .generation import HFGenerator, SampleGenerator
from .logprobs import sequence_logps

SELF_PLAY_STATE = "aihf_self_play.json"
SELF_PLAY_SAMPLES = "aihf_self_play_samples_rank{rank}.json"
OPPONENT_WEIGHTS = "aihf_opponent.safetensors"
STAGING_DIR = ".aihf-staging"


def _is_peft(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # peft is a dependency, but keep the trainer usable without it
        return False
    return isinstance(model, PeftModel)


def disable_dropout(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def _frozen(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


def _stop_tokens(tokenizer: Any, model: nn.Module, eos_token: str | None = None) -> list[int]:
    """The data's end token, the tokenizer's EOS and any end-of-turn ids the model's generation config lists."""
    ids = [i for i in (end_token(tokenizer, eos_token).id, tokenizer.eos_token_id) if i is not None]
    ids = list(dict.fromkeys(ids))
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in config_eos if isinstance(config_eos, list) else [config_eos]:
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def _stable_seed(*parts: int) -> int:
    return zlib.crc32(repr(parts).encode()) & 0x7FFFFFFF


class AIHFTrainer(Trainer):
    """Align ``model`` with demonstrations and preference pairs in one training stage.

    Args:
        model: a causal LM, or a local path / hub id to load one from.
        ref_model: the frozen reference ``pi_ref``. Default: a frozen copy of ``model`` as given;
            for a PEFT model, the same model with its adapters disabled.
        args: an :class:`AIHFConfig`.
        demonstrations / preferences: a ``datasets.Dataset``, a list of dicts or a path to a
            ``.jsonl``/``.json``/``.csv``/``.parquet`` file (formats: :mod:`aihf.data.formats`).
            A source whose weight is 0 may be omitted; it is ignored if given.
        eval_demonstrations / eval_preferences: optional held-out sources for ``evaluate()``;
            the evaluation loss uses the demonstration NLL in every mode (it samples nothing).
        processing_class: the tokenizer (loaded from ``model`` when that is a path).
        peft_config: wrap ``model`` with this PEFT (e.g. LoRA) config.
        generator: self-play sampler, ``generator(model, prompts, seed) -> completions``;
            default :class:`HFGenerator` configured from ``args``.

    Every data source is read, validated and tokenised here, so bad input raises
    :class:`aihf.DataError` before any training step or output file.
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
    ):
        args = args if args is not None else AIHFConfig(output_dir="aihf-output")
        if not isinstance(args, AIHFConfig):
            raise TypeError(f"args must be an AIHFConfig, got {type(args).__name__}")
        if isinstance(model, str):
            if processing_class is None:
                processing_class = AutoTokenizer.from_pretrained(model)
            # float32 master weights: set bf16=True for mixed precision. A checkpoint stored in
            # bf16 would otherwise train in pure bf16, where small updates round away.
            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        if processing_class is None:
            raise ValueError("processing_class (the tokenizer) is required when model is not a path")
        tokenizer = processing_class
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if isinstance(ref_model, str):
            ref_model = AutoModelForCausalLM.from_pretrained(ref_model, dtype=torch.float32)

        # Data first: bad input must fail before anything else happens.
        self.demo_weight, self.pref_weight = args.demo_weight, args.pref_weight
        train_prefs, train_demos = self._prepare_sources(args, tokenizer, preferences, demonstrations, "training")
        eval_dataset = None
        if eval_preferences is not None or eval_demonstrations is not None:
            eval_prefs, eval_demos = self._prepare_sources(
                args, tokenizer, eval_preferences, eval_demonstrations, "evaluation", required=False
            )
            if eval_prefs is not None or eval_demos is not None:
                eval_dataset = PairedDataset(eval_prefs, eval_demos)

        if peft_config is not None:
            from peft import get_peft_model

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
        if needs_reference and ref_model is None and not _is_peft(model):
            if is_deepspeed_zero3_enabled():
                raise ValueError(
                    "under DeepSpeed ZeRO-3 the policy's weights are partitioned and cannot be copied: pass ref_model "
                    "(e.g. the same checkpoint loaded again; --ref_model_name_or_path on the command line)"
                )
            ref_model = copy.deepcopy(model)
        self.ref_model = _frozen(ref_model) if ref_model is not None else None
        if self.ref_model is not None and args.disable_dropout:
            disable_dropout(self.ref_model)

        super().__init__(
            model=model,
            args=args,
            data_collator=AIHFCollator(tokenizer.pad_token_id, args.pad_to_multiple_of),
            train_dataset=PairedDataset(train_prefs, train_demos),
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        if self.ref_model is not None:
            self.ref_model = self._prepare_frozen(self.ref_model)

        self.self_play = args.demo_loss == "self_play" and train_demos is not None
        self._opponent: nn.Module | None = None
        self._round: int | None = None
        self._samples: dict[int, tuple[list[int], float, float]] = {}
        self._gen_calls = (-1, 0)  # (global_step, calls during that step): seeds generation
        if self.self_play:
            if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
                raise NotImplementedError("self-play generation under DeepSpeed ZeRO-3 is not supported yet")
            self._opponent = self._prepare_frozen(copy.deepcopy(self.model))
            self.generator = generator or HFGenerator(
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=_stop_tokens(tokenizer, self.model, args.eos_token),
                max_new_tokens=args.max_new_tokens,
                do_sample=args.do_sample,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                batch_size=args.generation_batch_size,
            )
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

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
            raise ValueError(f"pref_weight={args.pref_weight} but no {purpose} preferences were given")
        if args.demo_weight > 0:
            if demonstrations is not None:
                demos = prepare_demonstrations(demonstrations, tokenizer, **kw)
            if prefs is not None and args.use_references_as_demonstrations:
                refs = references_as_demonstrations(prefs)
            if refs is not None:
                demos = refs if demos is None else datasets.concatenate_datasets([demos, refs])
            if demos is None and required:
                raise ValueError(
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
            return _frozen(engine)
        return _frozen(model.to(self.accelerator.device))

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if model.training else "eval"
        n_p, n_d = inputs["num_pairs"], inputs["num_demos"]
        batch = {k: inputs[k] for k in ("input_ids", "attention_mask", "completion_mask")}
        self_play = self.self_play and mode == "train" and n_d > 0
        if self_play:
            opponent_demo, opponent_sample, sample_rows = self._self_play_samples(inputs)
            batch = concat_padded(batch, sample_rows, self.processing_class.pad_token_id)

        logps, num_tokens = sequence_logps(model, **batch)
        metrics: dict[str, torch.Tensor] = {}

        pref_term = None
        if n_p:
            ref_chosen, ref_rejected = self._reference_logps(batch, 2 * n_p).chunk(2)
            pref = losses.dpo_loss(logps[:n_p], logps[n_p : 2 * n_p], ref_chosen, ref_rejected, self.args.beta)
            pref_term = pref.loss
            metrics.update(
                {
                    "rewards/chosen": pref.chosen_rewards,
                    "rewards/rejected": pref.rejected_rewards,
                    "rewards/accuracies": (pref.margins > 0).float(),
                    "rewards/margins": pref.margins,
                    "logps/chosen": logps[:n_p].detach(),
                    "logps/rejected": logps[n_p : 2 * n_p].detach(),
                    "loss/pref": pref.per_example.detach(),
                }
            )

        demo_term = None
        if n_d:
            demo_logps = logps[2 * n_p : 2 * n_p + n_d]
            demo_tokens = num_tokens[2 * n_p : 2 * n_p + n_d]
            metrics["demo/logps"] = demo_logps.detach()
            if self_play:
                sample_logps = logps[2 * n_p + n_d :]
                demo = losses.self_play_loss(demo_logps, sample_logps, opponent_demo, opponent_sample, self.args.beta)
                demo_term = demo.loss
                metrics.update(
                    {
                        "demo/sample_logps": sample_logps.detach(),
                        "demo/rewards": demo.chosen_rewards,
                        "demo/sample_rewards": demo.rejected_rewards,
                        "demo/margins": demo.margins,
                        "demo/accuracies": (demo.margins > 0).float(),
                        "loss/demo": demo.per_example.detach(),
                    }
                )
            else:
                demo = losses.demonstration_nll_loss(
                    demo_logps, demo_tokens, normalizer=self._nll_normalizer(mode, demo_tokens).to(demo_logps.dtype)
                )
                demo_term = demo.loss
                # The token-mean NLL of the step (after averaging over micro-batches and processes).
                metrics["demo/nll"] = metrics["loss/demo"] = demo.loss.detach().reshape(1)

        # An evaluation set may hold only one of the two sources: combine the terms present.
        loss = losses.aihf_loss(
            demo_term,
            pref_term,
            self.demo_weight if demo_term is not None else 0.0,
            self.pref_weight if pref_term is not None else 0.0,
        )
        self._record(mode, metrics)
        if self_play and mode == "train":
            self._metrics[mode]["self_play/round"].append(float(self._round))
        return (loss, {"logps": logps.detach()}) if return_outputs else loss

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        # Demonstration tokens in the whole optimizer step (all micro-batches, all processes), so
        # that the NLL is the token mean of the global batch whatever the accumulation/parallelism.
        tokens = sum(
            int(b["completion_mask"][2 * b["num_pairs"] : 2 * b["num_pairs"] + b["num_demos"]].sum())
            for b in batch_samples
        )
        total = self.accelerator.gather(torch.tensor([tokens], device=device)).sum()
        self._step_demo_tokens = (total, len(batch_samples))
        return batch_samples, num_items

    def _nll_normalizer(self, mode: str, demo_tokens: torch.Tensor) -> torch.Tensor:
        """Denominator of this micro-batch's NLL such that, after the Trainer divides each
        micro-batch loss by the accumulation steps and data parallelism averages gradients over
        processes, the step optimises ``-sum(log-probs) / (demonstration tokens in the step)``."""
        if mode == "train" and getattr(self, "_step_demo_tokens", None) is not None:
            total, micro_batches = self._step_demo_tokens
            return total.float().clamp_min(1) / (micro_batches * self.accelerator.num_processes)
        total = self.accelerator.gather(demo_tokens.sum().reshape(1)).sum()
        return total.float().clamp_min(1) / self.accelerator.num_processes

    @torch.no_grad()
    def _reference_logps(self, batch: dict[str, torch.Tensor], rows: int) -> torch.Tensor:
        part = {k: v[:rows] for k, v in batch.items()}
        if self.ref_model is not None:
            return sequence_logps(self.ref_model, **part)[0]
        # PEFT: the reference is the base model, i.e. the policy with its adapters switched off.
        unwrapped = self.accelerator.unwrap_model(self.model)
        with unwrapped.disable_adapter():
            return sequence_logps(unwrapped, **part)[0]

    def _record(self, mode: str, metrics: dict[str, torch.Tensor]) -> None:
        for name, values in metrics.items():
            # gather, not gather_for_metrics: the latter trims the last batch of an epoch as if
            # every tensor were per-example, which scalar metrics are not.
            gathered = self.accelerator.gather(values.float())
            self._metrics[mode][name].append(gathered.mean().item())

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
        """Opponent samples for the batch's demonstrations (cached per round) and the opponent's
        log-probs of each demonstration and sample."""
        self._start_round_if_due()
        step, calls = self._gen_calls
        calls = calls + 1 if step == self.state.global_step else 0
        self._gen_calls = (self.state.global_step, calls)
        seed = _stable_seed(self.args.seed, self._round, self.state.global_step, calls, self.args.process_index)

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
            samples = [s or [self.processing_class.eos_token_id] for s in samples]  # never an empty answer
            demo_rows = {
                key: inputs[key][2 * n_p :][todo] for key in ("input_ids", "attention_mask", "completion_mask")
            }
            sample_rows = pad_sequences([prompts[k] for k in todo], samples, pad)
            sample_rows = {k: v.to(self.accelerator.device) for k, v in sample_rows.items()}
            scored = sequence_logps(self._opponent, **concat_padded(demo_rows, sample_rows, pad))[0].tolist()
            for i, (k, sample) in enumerate(zip(todo, samples)):
                self._samples[indices[k]] = (sample, scored[i], scored[len(todo) + i])
        cached = [self._samples[j] for j in indices]
        device = self.accelerator.device
        sample_rows = pad_sequences(prompts, [c[0] for c in cached], pad)
        sample_rows = {k: v.to(device) for k, v in sample_rows.items()}
        opponent_demo = torch.tensor([c[1] for c in cached], device=device)
        opponent_sample = torch.tensor([c[2] for c in cached], device=device)
        return opponent_demo, opponent_sample, sample_rows

    # ------------------------------------------------------------------ logging / eval
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        averaged = {name: sum(v) / len(v) for name, v in self._metrics[mode].items() if v}
        if "self_play/round" in averaged:
            averaged["self_play/round"] = self._metrics[mode]["self_play/round"][-1]
        if mode == "eval":
            averaged = {f"eval_{name}": value for name, value in averaged.items()}
        logs.update(averaged)
        super().log(logs, start_time)
        self._metrics[mode].clear()

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

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
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
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
        super()._load_rng_state(checkpoint)
        if checkpoint is not None and self.self_play:
            self._load_self_play_state(checkpoint)

    def _load_self_play_state(self, checkpoint: str) -> None:
        state_file = os.path.join(checkpoint, SELF_PLAY_STATE)
        weights = os.path.join(checkpoint, OPPONENT_WEIGHTS)
        if not (os.path.isfile(state_file) and os.path.isfile(weights)):
            warnings.warn(f"{checkpoint} has no self-play state; the next step starts a new round", stacklevel=2)
            return
        with open(state_file) as f:
            state = json.load(f)
        # Loaded on the CPU, then copied into the opponent's parameters wherever they live.
        load_model(self._opponent, weights, device="cpu")
        self._round = state["round"]
        self._gen_calls = tuple(state["gen_calls"])
        self._samples = {}
        samples_file = os.path.join(checkpoint, SELF_PLAY_SAMPLES.format(rank=self.args.process_index))
        if os.path.isfile(samples_file):  # absent when resuming on more processes: those resample
            with open(samples_file) as f:
                self._samples = {int(j): (v[0], v[1], v[2]) for j, v in json.load(f).items()}
