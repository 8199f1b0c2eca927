"""The classic two-stage baselines as one call on the same data as AIHF: SFT then DPO, and SFT then
RLHF (a reward model fitted on the preferences, then RL on it frozen)."""

from __future__ import annotations

import dataclasses
import os
import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import AutoModelForCausalLM

from ..errors import ConfigError
from .config import AIHFConfig
from .model_setup import is_peft
from .rl_config import AIHFRLConfig
from .rl_trainer import AIHFRLTrainer, GoldReward
from .trainer import AIHFTrainer


@dataclass
class TwoStageResult:
    model: nn.Module
    sft_trainer: AIHFTrainer
    dpo_trainer: AIHFTrainer


def sft_stage_args(args: AIHFConfig, **overrides: Any) -> AIHFConfig:
    """``args`` turned into the SFT stage's: ``<output_dir>/sft``, demonstrations NLL only."""
    return dataclasses.replace(
        args,
        output_dir=os.path.join(args.output_dir, "sft"),
        pref_weight=0.0,
        demo_weight=1.0,
        demo_loss="nll",
        sync_ref_model=False,  # SFT has no reference
        **overrides,
    )


def run_sft_stage(
    model: nn.Module | str,
    sft_args: AIHFConfig,
    demonstrations: Any,
    preferences: Any,
    processing_class: Any = None,
    peft_config: Any = None,
    callbacks: list | None = None,
) -> tuple[AIHFTrainer, nn.Module]:
    """Train and save the SFT stage of a two-stage pipeline; returns its trainer and the SFT model.

    With ``peft_config``, the adapter is merged and the merged model saved to
    ``<sft output_dir>/merged`` and loaded back from there, so that the next stage's adapter
    (and "adapters disabled" as its reference) starts from the SFT model.
    """
    if sft_args.pref_weight == 0 and not sft_args.use_references_as_demonstrations:
        preferences = None  # the stage reads the pairs for nothing else
    with warnings.catch_warnings():
        # The pipeline passes the pairs for their gold references only; that the stage ignores
        # pairs without any is its design, not something the user did.
        warnings.filterwarnings("ignore", message="pref_weight=0: the training preference pairs are ignored")
        sft = AIHFTrainer(
            model,
            args=sft_args,
            demonstrations=demonstrations,
            preferences=preferences,
            processing_class=processing_class,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    sft.train()
    sft.save_model()
    sft.save_state()
    sft_model = sft.accelerator.unwrap_model(sft.model)
    if is_peft(sft_model):
        merged_dir = os.path.join(sft_args.output_dir, "merged")
        sft_model = sft_model.merge_and_unload()
        if sft.args.should_save:
            sft_model.save_pretrained(merged_dir)
            sft.processing_class.save_pretrained(merged_dir)
        sft.accelerator.wait_for_everyone()
        sft_model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=next(sft_model.parameters()).dtype)
    return sft, sft_model


def sft_then_dpo(
    model: nn.Module | str,
    args: AIHFConfig,
    demonstrations: Any,
    preferences: Any,
    processing_class: Any = None,
    *,
    sft_args: AIHFConfig | None = None,
    peft_config: Any = None,
    callbacks: list | None = None,
) -> TwoStageResult:
    """SFT on the demonstrations (and the preference rows' gold references), then DPO on the
    preferences with the SFT model as the frozen reference.

    ``args`` configures the DPO stage; the SFT stage uses ``sft_args`` if given, else ``args``
    with ``pref_weight=0, demo_weight=1, demo_loss="nll"``. Stages write to
    ``<output_dir>/sft`` and ``<output_dir>/dpo``. With ``peft_config``, the SFT adapter is
    merged into the weights (saved to ``<output_dir>/sft/merged``) before a fresh adapter is
    trained for DPO on top of it, so that "adapters disabled" is the SFT model.
    """
    if sft_args is None:
        sft_args = sft_stage_args(args)
    # The DPO stage starts from the SFT model object: the loading options were the SFT stage's.
    dpo_args = dataclasses.replace(
        args, output_dir=os.path.join(args.output_dir, "dpo"), demo_weight=0.0, model_init_kwargs=None
    )
    sft, sft_model = run_sft_stage(
        model, sft_args, demonstrations, preferences, processing_class, peft_config, callbacks
    )
    dpo = AIHFTrainer(
        sft_model,
        args=dpo_args,
        preferences=preferences,
        processing_class=sft.processing_class,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    dpo.train()
    dpo.save_model()
    dpo.save_state()
    return TwoStageResult(dpo.accelerator.unwrap_model(dpo.model), sft, dpo)


# ---------------------------------------------------------------------------- SFT -> RLHF


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
