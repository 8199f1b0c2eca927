"""Test-time measurements of ``aihf bench llm``: sampling, gold, KL to the base, diversity; the
tuning rule; and the record of a policy at points along training (:class:`FrontierRecorder`)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

from .stats import mean, mean_ci, ranks, spearman  # noqa: F401  (importable from here, as before)


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
        "gold": mean(golds),
        "kl": mean([k for p in per_prompt for k in p["kl"]]),
        "win_vs_base": mean([p["win_vs_base"] for p in per_prompt]),
        "distinct_2": distinct_n(texts, 2),
        "repetition_2": mean([repetition_rate(t) for t in texts]),
        "per_prompt": per_prompt,
        "examples": [
            {"prompt": references[i // samples]["prompt"], "completion": texts[i]} for i in range(min(3, len(texts)))
        ],
    }


def held_out_samples(references: list[dict]) -> list[dict]:
    """Every base sample of the reference prompts with its gold: ``prompt``, ``completion``, ``gold``
    (what a reward model's ranking is compared with)."""
    return [
        {"prompt": r["prompt"], "completion": c, "gold": g}
        for r in references
        for c, g in zip(r["base_completions"], r["base_gold"])
    ]


def select(points: list[dict], kl_cap: float) -> dict:
    """The grid point with the highest validation gold among those with validation KL <= ``kl_cap``;
    if none qualifies, the one with the lowest KL."""
    within = [p for p in points if p["validation"]["kl"] <= kl_cap]
    if within:
        return max(within, key=lambda p: p["validation"]["gold"])
    return min(points, key=lambda p: p["validation"]["kl"])


def held_out_pairs(references: list[dict]) -> list[dict]:
    """The reward models' held-out pairs: the first two base samples of each reference prompt, the one
    with the higher gold ``chosen``; prompts whose two samples tie on gold give none."""
    return [
        {"prompt": r["prompt"], "chosen": r["base_completions"][i], "rejected": r["base_completions"][1 - i]}
        for r in references
        if len(r["base_gold"]) >= 2 and r["base_gold"][0] != r["base_gold"][1]
        for i in [0 if r["base_gold"][0] > r["base_gold"][1] else 1]
    ]


# --------------------------------------------------------------------------- points along training
def frontier_point(result: dict, steps: int, stage: int, step: int) -> dict:
    """A frontier point from an :func:`evaluate` result: the policy's test KL and gold after ``steps``
    optimizer steps in all (``step`` of them in stage ``stage``), and each prompt's gold (mean over
    its samples), the units of the matched-KL intervals."""
    return {
        "steps": steps,
        "stage": stage,
        "step": step,
        "kl": result["kl"],
        "gold": result["gold"],
        "per_prompt_gold": [mean(p["gold"]) for p in result["per_prompt"]],
    }


def start_point(references: list[dict]) -> dict:
    """The frontier's first point, the base model before any step: KL 0 by definition, and the gold
    of the references' base samples (those of R_base), so that no run pays for it."""
    per_prompt = [mean(r["base_gold"]) for r in references]
    return {"steps": 0, "stage": 0, "step": 0, "kl": 0.0, "gold": mean(per_prompt), "per_prompt_gold": per_prompt}


def snapshot(model) -> dict[str, Any]:
    """A plain causal LM state dict of ``model`` on the CPU (a PEFT model merged in a copy)."""
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class FrontierRecorder(TrainerCallback):
    """Records the policy every ``every`` optimizer steps of each training stage and at each stage's
    end: ``record(model)`` (an evaluation, or a :func:`snapshot` to evaluate later) is kept in
    :attr:`points` as ``{"steps", "stage", "step", "value"}``. ``steps`` counts optimizer steps
    over all stages so far; an AIHF-RL stage (rounds as steps, :mod:`aihf.llm.callbacks`) counts
    ``policy_steps_per_round`` policy steps per round. Works on every trainer of a pipeline in turn."""

    def __init__(self, every: int, record: Callable[[Any], Any]):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.every, self.record = every, record
        self.points: list[dict] = []
        self.stage, self.done_before, self.stage_steps = 0, 0, 0

    def _unit(self, args) -> int:
        return getattr(args, "policy_steps_per_round", 1)  # AIHF-RL: policy steps per round

    def on_train_begin(self, args, state, control, **kwargs):
        self.stage += 1
        self.stage_steps = state.global_step * self._unit(args)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        before, self.stage_steps = self.stage_steps, state.global_step * self._unit(args)
        if self.stage_steps // self.every > before // self.every or state.global_step >= state.max_steps:
            steps = self.done_before + self.stage_steps
            self.points.append(
                {"steps": steps, "stage": self.stage, "step": self.stage_steps, "value": self.record(model)}
            )

    def on_train_end(self, args, state, control, **kwargs):
        self.done_before += self.stage_steps
