"""The methods of ``aihf bench llm``: one ``train(ctx, hp)`` function and one :data:`METHODS` entry each.

Every method starts from the base model. The two-stage pipelines (SFT -> DPO, RLHF) and the
AIHF-RL trainers (AIHF-RL, RFT) first run the same SFT stage (``max_steps`` steps of demonstration
NLL, the ``sft`` method's settings and seed, so the same SFT model); that SFT model is then the
RL stage's reference, its starting policy and the initial weights of its reward model.
Every RL method gets ``max_steps`` policy optimizer steps: ``max_steps // P`` rounds of ``P``
steps, ``P`` the library's default ``policy_steps_per_round`` (:func:`policy_steps_per_round`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunContext:
    """What a method's train function gets: the base, the data of this run, the budget."""

    base_dir: str
    tokenizer: Any
    demonstrations: list[dict]
    preferences: list[dict]  # this run's subset (empty for methods that use none)
    output_dir: str
    seed: int
    max_steps: int
    batch_size: int
    continuation_tokens: int
    eval_preferences: list[dict] = field(default_factory=list)  # held-out pairs (reward models' accuracy)
    eval_samples: list[dict] = field(default_factory=list)  # held-out base samples with gold (reward models' Spearman)
    peft_config: Any = None  # LoRA adapters on the policy (None: full fine-tuning)
    callbacks: list = field(default_factory=list)  # transformers.TrainerCallback, given to every stage's trainer
    demo_weight: float = 1.0  # the AIHF variants' w_D (the ablation changes it)
    pref_weight: float = 1.0  # the AIHF variants' w_P

    def load_base(self):
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=torch.float32)

    def config(self, hp: dict[str, float], **fields):
        from ..llm import AIHFConfig

        base = dict(
            output_dir=self.output_dir,
            per_device_train_batch_size=self.batch_size,
            max_steps=self.max_steps,
            learning_rate=hp["learning_rate"],
            beta=hp.get("beta", 0.1),
            lr_scheduler_type="cosine",
            warmup_steps=max(1, self.max_steps // 10),
            weight_decay=0.0,
            logging_strategy="no",
            save_strategy="no",
            overwrite_output_dir=True,  # a run interrupted before its result file was written is redone
            report_to="none",
            use_cpu=True,
            seed=self.seed,
            data_seed=self.seed,
            max_new_tokens=self.continuation_tokens,
            self_play_round_steps=max(1, self.max_steps // 4),
            disable_tqdm=True,
        )
        base.update(fields)
        return AIHFConfig(**base)

    def sft_config(self, hp: dict[str, float]):
        """The SFT stage of every two-stage method: the ``sft`` method's settings in ``<output_dir>/sft``."""
        from ..llm.pipelines import sft_stage_args

        return sft_stage_args(self.config(hp))

    def rl_config(self, hp: dict[str, float], **fields):
        """The RL stage at the same budget: ``max_steps`` policy steps (``max_steps // P`` rounds of the
        library's default ``P`` policy steps) on ``batch_size`` samples each (``batch_size / 4``
        prompts x 4 samples, RLOO), the library's other defaults (reward steps per round...), and the
        reward learning rate 1e-3 (not tuned). Written to ``<output_dir>/rl``."""
        from ..llm import AIHFRLConfig

        per_round = min(policy_steps_per_round(), self.max_steps)
        base = dict(
            output_dir=os.path.join(self.output_dir, "rl"),
            num_rounds=self.max_steps // per_round,
            policy_steps_per_round=per_round,
            per_device_train_batch_size=max(1, self.batch_size // 4),
            num_generations=4,
            reward_batch_size=self.batch_size,
            learning_rate=hp["learning_rate"],
            reward_learning_rate=1e-3,
            beta=hp.get("beta", 0.1),
            max_new_tokens=self.continuation_tokens,
            save_strategy="no",
            overwrite_output_dir=True,
            report_to="none",
            use_cpu=True,
            seed=self.seed,
            disable_tqdm=True,
        )
        base.update(fields)
        return AIHFRLConfig(**base)

    def sft_then_rl(self, hp: dict[str, float], *, preferences: bool, **fields):
        """The SFT stage, then AIHF-RL from the SFT model (``fields`` override :meth:`rl_config`)."""
        from ..llm import AIHFRLTrainer
        from ..llm.pipelines import run_sft_stage

        args = self.rl_config(hp, **fields)  # checked before any training
        _, sft_model = run_sft_stage(
            self.load_base(),
            self.sft_config(hp),
            self.demonstrations,
            None,
            self.tokenizer,
            self.peft_config,
            self.callbacks,
        )
        trainer = AIHFRLTrainer(
            sft_model,
            args=args,
            demonstrations=self.demonstrations,
            preferences=self.preferences if preferences else None,
            eval_preferences=self.eval_preferences or None,
            processing_class=self.tokenizer,
            peft_config=self.peft_config,
            callbacks=self.callbacks,
        )
        trainer.train()
        return trainer.policy, _reward_info(trainer, self)

    def train(self, hp: dict[str, float], *, demonstrations: bool, preferences: bool, **fields):
        from ..llm import AIHFTrainer

        trainer = AIHFTrainer(
            self.load_base(),
            args=self.config(hp, **fields),
            demonstrations=self.demonstrations if demonstrations else None,
            preferences=self.preferences if preferences else None,
            processing_class=self.tokenizer,
            peft_config=self.peft_config,
            callbacks=self.callbacks,
        )
        trainer.train()
        return trainer.accelerator.unwrap_model(trainer.model)


def policy_steps_per_round() -> int:
    """The library's default ``AIHFRLConfig.policy_steps_per_round``, read at run time."""
    from ..llm import AIHFRLConfig

    return next(f.default for f in dataclasses.fields(AIHFRLConfig) if f.name == "policy_steps_per_round")


def train_sft(ctx: RunContext, hp: dict[str, float]):
    return ctx.train(hp, demonstrations=True, preferences=False, pref_weight=0.0, demo_loss="nll")


def train_dpo(ctx: RunContext, hp: dict[str, float]):
    return ctx.train(hp, demonstrations=False, preferences=True, demo_weight=0.0)


def train_sft_then_dpo(ctx: RunContext, hp: dict[str, float]):
    """Two stages of ``max_steps`` each (so twice the steps of the one-stage methods)."""
    from ..llm.pipelines import sft_then_dpo

    result = sft_then_dpo(
        ctx.load_base(),
        ctx.config(hp),
        ctx.demonstrations,
        ctx.preferences,
        processing_class=ctx.tokenizer,
        sft_args=ctx.sft_config(hp),
        peft_config=ctx.peft_config,
        callbacks=ctx.callbacks,
    )
    return result.model


def train_spin(ctx: RunContext, hp: dict[str, float]):
    return ctx.train(hp, demonstrations=True, preferences=False, pref_weight=0.0, demo_loss="self_play")


def train_aihf_dpo(ctx: RunContext, hp: dict[str, float]):
    weights = dict(demo_weight=ctx.demo_weight, pref_weight=ctx.pref_weight)
    return ctx.train(hp, demonstrations=True, preferences=True, demo_loss="nll", **weights)


def train_self_play_aihf(ctx: RunContext, hp: dict[str, float]):
    weights = dict(demo_weight=ctx.demo_weight, pref_weight=ctx.pref_weight)
    return ctx.train(hp, demonstrations=True, preferences=True, demo_loss="self_play", **weights)


def _reward_info(trainer, ctx: RunContext) -> dict[str, float]:
    """The reward model's accuracy on held-out pairs labelled by the gold (higher gold wins), and the
    Spearman correlation of its scores with the gold over the held-out base samples."""
    from .evaluation import spearman

    found = trainer.evaluate_reward()
    info = {"reward_pair_accuracy": found["reward/eval_accuracy"]} if found else {}
    if ctx.eval_samples:
        rows = ctx.eval_samples
        scores = trainer.score([r["prompt"] for r in rows], [r["completion"] for r in rows])
        info["reward_spearman"] = spearman(scores, [r["gold"] for r in rows])
    return info


def train_rlhf(ctx: RunContext, hp: dict[str, float]):
    """SFT (``max_steps``), a reward model fitted on the pairs (``max_steps``), then RL (``max_steps`` policy steps)."""
    from ..llm.pipelines import sft_then_rlhf

    args = ctx.rl_config(hp, reward_pretrain_steps=ctx.max_steps)
    # sft_then_rlhf writes its RL stage to <output_dir>/rlhf.
    args = dataclasses.replace(args, output_dir=ctx.output_dir)
    result = sft_then_rlhf(
        ctx.load_base(),
        args,
        ctx.demonstrations,
        ctx.preferences,
        ctx.tokenizer,
        sft_args=ctx.sft_config(hp),
        eval_preferences=ctx.eval_preferences or None,
        peft_config=ctx.peft_config,
        callbacks=ctx.callbacks,
    )
    return result.model, _reward_info(result.rl_trainer, ctx)


def train_aihf_rl(ctx: RunContext, hp: dict[str, float]):
    """SFT, the reward model warm-started on the pairs as RLHF's is (``max_steps``), then joint rounds."""
    weights = dict(demo_weight=ctx.demo_weight, pref_weight=ctx.pref_weight)
    return ctx.sft_then_rl(hp, preferences=True, reward_pretrain_steps=ctx.max_steps, **weights)


def train_rft(ctx: RunContext, hp: dict[str, float]):
    return ctx.sft_then_rl(hp, preferences=False, pref_weight=0.0)


@dataclass(frozen=True)
class Method:
    train: Callable[[RunContext, dict[str, float]], Any]
    uses_preferences: bool
    uses_beta: bool


# The benchmark's methods, in table order; a method is one function and one entry here.
METHODS: dict[str, Method] = {
    "sft": Method(train_sft, uses_preferences=False, uses_beta=False),
    "dpo": Method(train_dpo, uses_preferences=True, uses_beta=True),
    "sft_then_dpo": Method(train_sft_then_dpo, uses_preferences=True, uses_beta=True),
    "spin": Method(train_spin, uses_preferences=False, uses_beta=True),
    "aihf_dpo": Method(train_aihf_dpo, uses_preferences=True, uses_beta=True),
    "self_play_aihf": Method(train_self_play_aihf, uses_preferences=True, uses_beta=True),
    "rlhf": Method(train_rlhf, uses_preferences=True, uses_beta=True),
    "aihf_rl": Method(train_aihf_rl, uses_preferences=True, uses_beta=True),
    "rft": Method(train_rft, uses_preferences=False, uses_beta=True),
}
REFERENCE_METHOD = "sft_then_dpo"  # the second opponent of win rates
# The paper's claim (docs/method.md): the AIHF variants against the pipelines they generalise.
AIHF_VARIANTS = ("aihf_dpo", "self_play_aihf", "aihf_rl")
BASELINES = ("dpo", "sft_then_dpo", "rlhf")
# The matched-KL comparison adds SFT alone (no pairs; its run at each seed meets every budget).
MATCHED_BASELINES = (*BASELINES, "sft")
# --ablation: the AIHF variants at the smallest budget with these (demo_weight, pref_weight).
ABLATION_WEIGHTS = ((0.3, 1.0), (1.0, 0.3), (3.0, 1.0))
_ABLATED = re.compile(r"^(?P<method>[a-z_]+)_wd(?P<demo>[0-9.]+)_wp(?P<pref>[0-9.]+)$")


def ablation_name(method: str, demo_weight: float, pref_weight: float) -> str:
    """The run name of an AIHF variant with other weights, e.g. ``aihf_dpo_wd0.3_wp1``."""
    return f"{method}_wd{demo_weight:g}_wp{pref_weight:g}"


def method_spec(name: str) -> tuple[str, float, float]:
    """``(method, demo_weight, pref_weight)`` of a run's method name (a :data:`METHODS` key, or an
    ablation name); ``KeyError`` for anything else."""
    found = _ABLATED.match(name)
    if found and found["method"] in AIHF_VARIANTS:
        return found["method"], float(found["demo"]), float(found["pref"])
    if name in METHODS:
        return name, 1.0, 1.0
    raise KeyError(name)
