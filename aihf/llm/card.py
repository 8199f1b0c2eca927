"""The model card (``README.md``) written next to a trained model: how it was trained, on
what, what it reached, and how to load it, like the cards TRL writes."""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

# Logged metrics worth a line in the card, in this order.
CARD_METRICS = (
    "loss",
    "loss/pref",
    "loss/demo",
    "rewards/accuracies",
    "rewards/margins",
    "rewards/chosen",
    "rewards/rejected",
    "demo/nll",
    "demo/logps",
    "demo/accuracies",
    "demo/margins",
    "num_tokens",
)


def method_name(demo_weight: float, pref_weight: float, demo_loss: str, loss_type: str) -> str:
    """The method a weighting amounts to (method.md, "Reductions")."""
    if pref_weight == 0:
        return "SFT (demonstration NLL)" if demo_loss == "nll" else "SPIN (self-play on demonstrations)"
    preference = "DPO" if loss_type == "sigmoid" else f"DPO family, loss_type={loss_type}"
    if demo_weight == 0:
        return preference
    if demo_loss == "nll":
        return f"AIHF-DPO, offline: {preference} on preferences + NLL on demonstrations"
    return f"Self-play AIHF, online: {preference} on preferences + self-play on demonstrations"


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process, as a user would type it."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    program = argv[0]
    # The console script, or `python -m aihf.cli` / torchrun's workers, whose argv[0] is the module file.
    cli_files = (
        os.path.join("aihf", "cli.py"),
        os.path.join("aihf", "cli", "__main__.py"),
        os.path.join("aihf", "__main__.py"),
    )
    if os.path.basename(program) == "aihf" or program.endswith(cli_files):
        return shlex.join(["aihf", *argv[1:]])
    return shlex.join(["python", program, *argv[1:]])


def _config_file(argv: list[str]) -> str | None:
    for flag, value in zip(argv, argv[1:]):
        if flag == "--config" and os.path.isfile(value):
            return value
    return None


def render(
    *,
    output_dir: str,
    base_model: str,
    args: Any,
    gguf_file: str | None = None,
    num_preferences: int,
    num_demonstrations: int,
    num_eval_preferences: int,
    num_eval_demonstrations: int,
    log_history: list[dict],
    peft_config: Any = None,
    argv: list[str] | None = None,
) -> str:
    """The card's Markdown text."""
    argv = list(sys.argv if argv is None else argv)
    last_train = next((h for h in reversed(log_history) if "loss" in h), {})
    summary = next((h for h in reversed(log_history) if "train_loss" in h), {})
    last_eval = next((h for h in reversed(log_history) if "eval_loss" in h), {})
    lines = _front_matter(
        output_dir,
        base_model,
        peft_config,
        tags="aihf, alignment, " + ("dpo" if args.pref_weight > 0 else "sft"),
        intro=f"Aligned from `{base_model}`"
        + (f" (GGUF file `{gguf_file}`, dequantised)" if gguf_file else "")
        + " with aihf (AIHF: demonstrations and preferences in one training stage).",
    )
    lines += [
        "## Method",
        "",
        "| setting | value |",
        "|---|---|",
        f"| method | {method_name(args.demo_weight, args.pref_weight, args.demo_loss, args.loss_type)} |",
        f"| demo_weight | {args.demo_weight} |",
        f"| pref_weight | {args.pref_weight} |",
        f"| demo_loss | {args.demo_loss} |",
        f"| beta | {args.beta} |",
        f"| loss_type | {args.loss_type} |",
        f"| label_smoothing | {args.label_smoothing} |",
    ]
    if peft_config is not None:
        r, alpha = getattr(peft_config, "r", None), getattr(peft_config, "lora_alpha", None)
        kind = getattr(getattr(peft_config, "peft_type", None), "value", "PEFT")
        lines.append(f"| adapter | {kind} (r={r}, alpha={alpha}) |")
    world = getattr(args, "world_size", 1)
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
    lines += [
        "",
        "## Data",
        "",
        "| source | rows |",
        "|---|---|",
        f"| preference pairs (train) | {num_preferences} |",
        f"| demonstrations (train, with gold references) | {num_demonstrations} |",
        f"| preference pairs (eval) | {num_eval_preferences} |",
        f"| demonstrations (eval) | {num_eval_demonstrations} |",
        "",
        "## Training",
        "",
        f"{summary.get('step', last_train.get('step', 0))} optimizer steps, global batch {global_batch} "
        f"({args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} accumulation x "
        f"{world} process(es)), learning rate {args.learning_rate}, seed {args.seed}.",
        "",
        "| final metric | value |",
        "|---|---|",
    ]
    for name in ("train_loss",):
        if name in summary:
            lines.append(f"| {name} | {summary[name]:.4g} |")
    lines += [f"| {name} | {last_train[name]:.4g} |" for name in CARD_METRICS if name in last_train]
    lines += [f"| {name} | {value:.4g} |" for name, value in last_eval.items() if isinstance(value, float)]
    lines += _reproduce_and_use(output_dir, peft_config, argv)
    return "\n".join(lines)


def _front_matter(output_dir: str, base_model: str, peft_config: Any, *, tags: str, intro: str) -> list:
    """The card's YAML metadata, title and first paragraph."""
    return [
        "---",
        f"library_name: {'peft' if peft_config is not None else 'transformers'}",
        # Only a Hub id means something to the Hub; a local path or an in-memory model does not.
        *([f"base_model: {base_model}"] if _is_hub_id(base_model) else []),
        f"tags: [{tags}]",
        "---",
        "",
        f"# {os.path.basename(os.path.abspath(output_dir))}",
        "",
        intro,
        "",
    ]


def _reproduce_and_use(output_dir: str, peft_config: Any, argv: list[str], extra_use: tuple[str, ...] = ()) -> list:
    """The card's last sections: the command (and its --config file), how to load the model, versions."""
    command = command_line(argv)
    lines = ["", "## Reproduce", "", "```bash", command, "```"]
    config = _config_file(argv)
    if config:
        with open(config) as f:
            lines += ["", f"with `{config}`:", "", "```yaml", f.read().rstrip(), "```"]
    loader = "AutoPeftModelForCausalLM" if peft_config is not None else "AutoModelForCausalLM"
    module = "peft" if peft_config is not None else "transformers"
    lines += [
        "",
        "## Use",
        "",
        "```python",
        f"from {module} import {loader}",
        "from transformers import AutoTokenizer",
        "",
        f'model = {loader}.from_pretrained("{output_dir}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{output_dir}")',
        'inputs = tokenizer("Hello", return_tensors="pt")',
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))",
        *extra_use,
        "```",
        "",
        "## Framework versions",
        "",
        *[f"- {name}: {version}" for name, version in _versions().items()],
        "",
    ]
    return lines


def rl_method_name(args: Any) -> str:
    """The method an AIHFRLConfig's weighting amounts to (method.md, instantiation 1 and its reductions)."""
    if args.pref_weight == 0:
        return "RFT (ML-IRL): reward model learned from the demonstrations, KL-regularised RL"
    if args.demo_weight == 0:
        return "RLHF: reward model fitted on the preferences, then KL-regularised RL"
    return "AIHF-RL: reward model learned from demonstrations and preferences jointly with KL-regularised RL"


def render_rl(
    *,
    output_dir: str,
    base_model: str,
    args: Any,
    num_preferences: int,
    num_demonstrations: int,
    num_eval_preferences: int,
    log_history: list[dict],
    peft_config: Any = None,
    argv: list[str] | None = None,
) -> str:
    """The model card of an :class:`aihf.llm.AIHFRLTrainer` output (policy + ``reward_model/``)."""
    argv = list(sys.argv if argv is None else argv)
    last = next((h for h in reversed(log_history) if "round" in h), {})
    lines = _front_matter(
        output_dir,
        base_model,
        peft_config,
        tags="aihf, alignment, rl, reward-model",
        intro=f"Aligned from `{base_model}` with aihf's explicit-reward trainer; the learned reward model is in "
        "`reward_model/`.",
    )
    lines += [
        "## Method",
        "",
        "| setting | value |",
        "|---|---|",
        f"| method | {rl_method_name(args)} |",
        *[
            f"| {name} | {getattr(args, name)} |"
            for name in ("demo_weight", "pref_weight", "demo_loss", "beta", "num_generations", "freeze_reward_model")
        ],
        "",
        "## Data",
        "",
        "| source | rows |",
        "|---|---|",
        f"| preference pairs (train) | {num_preferences} |",
        f"| demonstrations (train) | {num_demonstrations} |",
        f"| preference pairs (eval) | {num_eval_preferences} |",
        "",
        "## Training",
        "",
        f"{last.get('round', 0)} rounds of {args.policy_steps_per_round} policy step(s) on "
        f"{args.per_device_train_batch_size} prompts x {args.num_generations} samples and "
        f"{args.reward_steps_per_round} reward step(s), {getattr(args, 'world_size', 1)} process(es); "
        f"learning rates {args.learning_rate} (policy), {args.reward_learning_rate} (reward model); seed {args.seed}.",
        "",
        "| final metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.4g} |" for k, v in last.items() if isinstance(v, float) and not k.startswith("time/")],
    ]
    reward = os.path.join(output_dir, "reward_model")
    extra = (
        "",
        "from transformers import AutoModelForSequenceClassification",
        "",
        f'reward_model = AutoModelForSequenceClassification.from_pretrained("{reward}")',
    )
    lines += _reproduce_and_use(output_dir, peft_config, argv, extra)
    return "\n".join(lines)


def _is_hub_id(name: str) -> bool:
    return bool(name) and not name.startswith(("<", "/", ".")) and not os.path.exists(name) and " " not in name


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("aihf", "transformers", "torch", "peft", "accelerate", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
