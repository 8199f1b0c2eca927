"""Checkpoints of :class:`aihf.llm.AIHFRLTrainer` (a mixin): ``checkpoint-<round>`` folders written atomically,
the run fingerprint a resumed run must match (:mod:`aihf.llm.runs`), and the output-directory claim.

A checkpoint holds what a ``transformers.Trainer`` checkpoint holds for the policy (trainable weights,
optimizer, scheduler, ``trainer_state.json``, RNG state) plus AIHF-RL's extra state: the reward model's weights,
optimizer and scheduler, the samplers' positions and whether the reward pretraining is done
(``rl_state.json``), so that a resumed run continues bit for bit as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections import defaultdict
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.trainer import TRAINER_STATE_NAME

from ..errors import ConfigError
from . import guards, runs
from .model_setup import STAGING_DIR, is_peft, refusing_pickles
from .rl_parallel import trainable
from .runs import check_output_dir


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


def save_trainable(model: nn.Module, path: str) -> None:
    """``model``'s trainable parameters as a safetensors file."""
    save_file({n: p.detach().contiguous().cpu() for n, p in trainable(model).items()}, path)


def load_trainable(model: nn.Module, path: str) -> None:
    """Load :func:`save_trainable`'s file into ``model``; ``ValueError`` if the names differ."""
    state = load_file(path)
    params = trainable(model)
    if state.keys() != params.keys():
        raise ValueError(f"{path} does not hold this model's trainable parameters")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


class CheckpointMixin:
    """Needs the trainer's models, optimizers, schedulers, ``state``, ``_samplers`` and data."""

    def _run_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint of this run records (``aihf_run.json``) and a resumed run must match."""
        if self._fingerprint is None:
            args = self.args
            accumulation = args.gradient_accumulation_steps
            self._fingerprint = {
                **self._model_source,
                "peft": is_peft(self.policy),
                "reward_peft": is_peft(self.reward_model),
                "preferences": runs.data_digest(self.preferences, ("prompt_ids", "chosen_ids", "rejected_ids")),
                "demonstrations": runs.data_digest(self.demonstrations, ("prompt_ids", "completion_ids")),
                **{name: getattr(args, name, None) for name in RUN_FIELDS},
                # Recorded only when set, so that checkpoints from before these existed still match.
                **({"gradient_accumulation_steps": accumulation} if accumulation != 1 else {}),
                **({"prompts": self._prompts_digest} if self._prompts_digest is not None else {}),
                # More rounds may follow under the constant schedule (the default); another one is sized by them.
                "num_rounds": None if args.lr_scheduler_type == "constant" else self.num_rounds,
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

    def write_round_checkpoint(self) -> str:
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
        save_trainable(self.policy, os.path.join(staged, "policy.safetensors"))
        save_trainable(self.reward_model, os.path.join(staged, "reward_model.safetensors"))
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
            "log_history": self.state.log_history,
            "timings": dict(self.timings),
            "num_input_tokens_seen": self.state.num_input_tokens_seen,
        }
        with open(os.path.join(staged, STATE_FILE), "w") as f:
            json.dump(state, f)
        self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))  # for tools that read a Trainer's
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
        load_trainable(self.policy, os.path.join(folder, "policy.safetensors"))
        load_trainable(self.reward_model, os.path.join(folder, "reward_model.safetensors"))
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
        self.state.log_history = state["log_history"]
        self.state.num_input_tokens_seen = guards.check_int(
            state.get("num_input_tokens_seen", 0), "num_input_tokens_seen", state_file
        )
        self.timings = defaultdict(float, state["timings"])
