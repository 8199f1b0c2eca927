"""Run safety and outputs of :class:`aihf.llm.AIHFTrainer`, as ``transformers.Trainer`` overrides:
the output-dir claim (a fresh run never mixes with another one), the resume check against the run
fingerprint (:mod:`aihf.llm.runs`), atomic checkpoints (staged, then renamed into place), the
running totals a resumed run continues, pickle-free loading, and the saved model with its card.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import warnings
from typing import Any

from torch import nn
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint, rotate_checkpoints

from ..errors import ConfigError
from . import card, guards, reference, runs
from .loading import is_loadable
from .model_setup import STAGING_DIR, is_peft, refusing_pickles

RUN_STATE = "aihf_state.json"  # running totals that the logs continue after a resume
BASE_MODEL_DIR = "base_model"
# Objective settings (beside runs.OBJECTIVE_FIELDS) in the fingerprint when not at their default.
OPTIONAL_OBJECTIVE_FIELDS = {
    "loss_weights": None,
    "use_weighting": False,
    "sync_ref_model": False,
    "ref_model_mixup_alpha": 0.6,
    "ref_model_sync_steps": 512,
    "truncation_mode": None,
}


def checkpoint_step(checkpoint: str) -> int | str:
    """The step in a ``checkpoint-N`` folder's name, or ``"?"``."""
    name = os.path.basename(os.path.normpath(checkpoint))
    suffix = name.rsplit("-", 1)[-1]
    return int(suffix) if suffix.isdigit() else "?"


class CheckpointingMixin(Trainer):
    """``Trainer`` overrides that keep a run's outputs its own and its checkpoints resumable.

    The subclass sets ``_model_source`` (:func:`aihf.llm.runs.model_source`), ``_fingerprint = None``,
    ``_nonfinite_skipped`` and ``_total_tokens`` (the running totals saved in ``aihf_state.json``),
    and may override the hooks :meth:`_extra_checkpoint_bytes`, :meth:`_save_extra_state` and
    :meth:`_load_extra_state` for state of its own (self-play).
    """

    # ------------------------------------------------------------------ hooks
    def _extra_checkpoint_bytes(self) -> int:
        return 0

    def _save_extra_state(self, folder: str) -> None:
        """Called on every process with the staged checkpoint folder, before it is renamed into place."""

    def _load_extra_state(self, checkpoint: str) -> None:
        """Called on every process before the first resumed step."""

    def _policy(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

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
        size = guards.checkpoint_bytes(policy, full_model=not is_peft(policy)) + self._extra_checkpoint_bytes()
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
            # TRL's objective options count when set, so that checkpoints written before they existed still match.
            for name, default in OPTIONAL_OBJECTIVE_FIELDS.items():
                value = getattr(self.args, name, default)
                if value != default:
                    self._fingerprint[name] = value
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
            step = checkpoint_step(checkpoint)
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
            if isinstance(dataset, dict):  # named evaluation sets
                return sum(size(d, part) for d in dataset.values())
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
        self._save_extra_state(staged)
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

    def _load_rng_state(self, checkpoint):
        # Every resume path (plain, FSDP, DeepSpeed) calls this before the first resumed step,
        # unlike _load_from_checkpoint, so the trainer's own state is restored here.
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
        self._load_extra_state(checkpoint)

    def _load_optimizer_and_scheduler(self, checkpoint):
        # transformers 5 loads optimizer.pt / scheduler.pt with torch.load(weights_only=True).
        with refusing_pickles(checkpoint, "optimizer or scheduler state"):
            super()._load_optimizer_and_scheduler(checkpoint)

