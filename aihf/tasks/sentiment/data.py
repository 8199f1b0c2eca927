"""The sentiment task's data: prompts, demonstrations, preference pairs and a data card.

- prompts: a speaker line and the first words of a speech from the held-out plays
  (:mod:`.corpus`), split into train / validation / test;
- demonstrations: for each demonstration prompt, the best of ``demo_best_of`` base-model samples
  under the gold reward (a stronger generator than the base, as in the DPO paper's sentiment task);
- preferences: for each preference prompt, two base-model samples labelled by one
  Bradley-Terry draw on their gold rewards with temperature ``bt_temperature * std(gold)``;
- the regime (:data:`REGIMES`) sets the last two: strong demonstrations (best of ``best_of``) with
  noisy labels (``bt_temperature`` 0.25), or weak demonstrations (best of 2) with cleaner labels
  (0.05), where the preferences carry what the demonstrations lack;
- references for evaluation: ``eval_samples`` base samples per validation/test prompt (the
  base model's reward and the opponent of win rates) and the best of ``best_of`` (the
  demonstrator's reward R_demo of the normalised score).

Everything is written as JSONL in the formats ``aihf train`` reads, with ``card.json`` and
``card.md`` (sizes, gold statistics, seed). The folder is reused when its card matches.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field

from ...errors import ConfigError
from .base import base_model_dir, cache_dir
from .corpus import load_plays, make_prompts, split_corpus
from .gold import DEFAULT_GOLD, gold_statistics, label_pairs, load_gold
from .sampling import sample_continuations

CARD = "card.json"
# aihf's per-run warning about the rows :func:`boundary_merges` finds; the data build says it once.
BOUNDARY_WARNING = r".*a token straddles the prompt/completion boundary"
# The data regimes: (base samples per demonstration, None = ``best_of``; Bradley-Terry temperature
# of the pair labels in units of the base samples' gold std). strong_demos is the task's original
# data; weak_demos gives the preferences what the demonstrations lack (docs/benchmark.md).
REGIMES: dict[str, tuple[int | None, float]] = {"strong_demos": (None, 0.25), "weak_demos": (2, 0.05)}
# The continuation length: 32 tokens (about 25 words) makes the gold informative for the
# shipped base -- see docs/benchmark.md for the measured fraction of non-zero gold per length.
DEFAULT_LENGTH = 32


@dataclass
class TaskConfig:
    output_dir: str | None = field(
        default=None, metadata={"help": "Data folder (default: a folder per configuration under the aihf cache)."}
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Base model folder (default: the shipped Shakespeare base)."}
    )
    gold: str = field(default=DEFAULT_GOLD, metadata={"help": "Gold reward, 'module:function' mapping str -> float."})
    continuation_tokens: int = field(default=DEFAULT_LENGTH, metadata={"help": "Tokens per continuation."})
    prefix_words: int = field(default=6, metadata={"help": "Words of the speech in each prompt."})
    prompt_source: str = field(
        default="shakespeare",
        metadata={
            "help": "Prompts: 'shakespeare' (held-out plays) or 'chatterbot' (first user turns of the "
            "chatterbot-corpus dialogues in the base model's chat template; see aihf.tasks.chat).",
            "choices": ["shakespeare", "chatterbot"],
        },
    )
    num_demonstrations: int = field(default=200, metadata={"help": "Demonstrations (one per prompt)."})
    num_preferences: int = field(default=400, metadata={"help": "Preference pairs (one per prompt)."})
    num_validation: int = field(default=64, metadata={"help": "Validation prompts."})
    num_test: int = field(default=128, metadata={"help": "Test prompts."})
    best_of: int = field(
        default=16,
        metadata={
            "help": "Base samples per validation/test reference (R_demo, the best under the gold) and, in "
            "the strong_demos regime, per demonstration."
        },
    )
    eval_samples: int = field(default=2, metadata={"help": "Base samples per validation/test prompt."})
    regime: str = field(
        default="strong_demos",
        metadata={
            "help": "Data regime: 'strong_demos' (demonstrations best of best_of, pair labels at "
            "bt_temperature 0.25) or 'weak_demos' (demonstrations best of 2, labels at 0.05: the "
            "preferences carry what the demonstrations lack). The references are the same in both.",
            "choices": list(REGIMES),
        },
    )
    demo_best_of: int | None = field(
        default=None,
        metadata={"help": "Base samples per demonstration, the best under the gold wins (default: the regime's)."},
    )
    bt_temperature: float | None = field(
        default=None,
        metadata={
            "help": "Bradley-Terry temperature of the preference labels, in units of the base samples' gold "
            "std (default: the regime's)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the prompt split, sampling and labels."})
    # 256 rows per call: generate()'s per-token Python overhead dominates at this model size
    # (about 25 % less CPU than 64 rows; measured on the shipped base).
    batch_size: int = field(default=256, metadata={"help": "Sequences per generate() call."})

    def check(self) -> None:
        positive = (
            "continuation_tokens",
            "prefix_words",
            "num_demonstrations",
            "num_preferences",
            "num_validation",
            "num_test",
            "best_of",
            "eval_samples",
            "batch_size",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.regime not in REGIMES:
            raise ConfigError(f"--regime must be one of {', '.join(REGIMES)}, got '{self.regime}'")
        if self.demo_best_of is not None and self.demo_best_of < 1:
            raise ConfigError(f"--demo_best_of must be >= 1, got {self.demo_best_of}")
        if self.bt_temperature is not None and not self.bt_temperature > 0:
            raise ConfigError(f"--bt_temperature must be > 0, got {self.bt_temperature}")
        if self.prompt_source not in ("shakespeare", "chatterbot"):
            raise ConfigError(f"--prompt_source must be 'shakespeare' or 'chatterbot', got '{self.prompt_source}'")

    def regime_settings(self) -> tuple[int, float]:
        """(base samples per demonstration, pair-label temperature in gold stds): the explicit
        fields, else the regime's."""
        demo_n, factor = REGIMES[self.regime]
        demo_n = self.demo_best_of or demo_n or self.best_of
        return demo_n, self.bt_temperature if self.bt_temperature is not None else factor


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def model_digest(folder: str) -> str:
    """A digest of a model folder's weights and tokenizer: the data depend on these, not on where
    the folder lies."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors") or name == "tokenizer.json":
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()[:16]


def data_key(config: TaskConfig, base_dir: str) -> dict:
    """What the data depend on: ``config`` without its folders, and the base model's digest."""
    key = dict(asdict(config), output_dir=None, base_model=model_digest(base_dir))
    if key["prompt_source"] == "shakespeare":
        del key["prompt_source"]  # the key of data built before the setting existed, so that they are reused
    # The regime is a name for its two settings: the key holds their values, and leaves out
    # demo_best_of where it is best_of, so that the strong_demos key is that of the older data.
    demo_n, key["bt_temperature"] = config.regime_settings()
    del key["regime"], key["demo_best_of"]
    if demo_n != config.best_of:
        key["demo_best_of"] = demo_n
    return key


def default_data_dir(config: TaskConfig, base_dir: str) -> str:
    import hashlib

    digest = hashlib.sha256(json.dumps(data_key(config, base_dir), sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(cache_dir(), "sentiment", f"data-{digest}")


def build_task_data(config: TaskConfig, *, log=print) -> str:
    """Write the task's data for ``config`` (see the module docstring) and return its folder.
    An existing folder whose card has the same configuration is returned as is."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config.check()
    gold_fn = load_gold(config.gold)
    base_dir = config.base_model or base_model_dir(log=log)
    out = config.output_dir or default_data_dir(config, base_dir)
    card_path = os.path.join(out, CARD)
    wanted = data_key(config, base_dir)
    if os.path.isfile(card_path):
        with open(card_path) as f:
            if json.load(f).get("config") == wanted:
                return out

    start = time.time()
    if config.prompt_source == "chatterbot":
        from ..chat import load_chat_prompts

        prompts, source = load_chat_prompts(seed=config.seed), "the chatterbot-corpus dialogues"
    else:
        _, held_out = split_corpus(load_plays())
        prompts = make_prompts(held_out, prefix_words=config.prefix_words, seed=config.seed)
        source = "the held-out plays"
    sizes = [config.num_test, config.num_validation, config.num_demonstrations, config.num_preferences]
    if sum(sizes) > len(prompts):
        raise ConfigError(
            f"{source} give {len(prompts)} prompts, but test + validation + demonstrations + "
            f"preferences ask for {sum(sizes)}"
        )
    bounds = [sum(sizes[:i]) for i in range(5)]
    test, val, demo_prompts, pref_prompts = (prompts[bounds[i] : bounds[i + 1]] for i in range(4))

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if config.prompt_source == "chatterbot":
        from ..chat import render_chat_prompts

        test, val, demo_prompts, pref_prompts = (
            render_chat_prompts(tokenizer, split) for split in (test, val, demo_prompts, pref_prompts)
        )
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    kw = dict(
        length=config.continuation_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        batch_size=config.batch_size,
    )

    def draw(texts: list[str], n: int, seed: int) -> list[list[str]]:
        ids = [tokenizer(t)["input_ids"] for t in texts]
        samples = sample_continuations(model, ids, num_samples=n, seed=seed, **kw)
        return [[tokenizer.decode(s, skip_special_tokens=True) for s in per] for per in samples]

    def score(samples: list[list[str]]) -> list[list[float]]:
        return [[float(gold_fn(s)) for s in per] for per in samples]

    demo_n, factor = config.regime_settings()
    log(f"sampling {len(pref_prompts) * 2 + len(demo_prompts) * demo_n:,} training continuations ({config.regime})")
    pref_samples = draw(pref_prompts, 2, config.seed * 10 + 1)
    pref_gold = score(pref_samples)
    flat_gold = [g for per in pref_gold for g in per]
    spread = gold_statistics(flat_gold)["std"]
    temperature = factor * (spread if spread > 0 else 1.0)
    labels = label_pairs(
        [g[0] for g in pref_gold], [g[1] for g in pref_gold], temperature, random.Random(config.seed * 10 + 2)
    )
    preferences = []
    for prompt, (a, b), (ga, gb), (a_wins, p) in zip(pref_prompts, pref_samples, pref_gold, labels):
        chosen, rejected, g_c, g_r = (a, b, ga, gb) if a_wins else (b, a, gb, ga)
        preferences.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "gold_chosen": g_c,
                "gold_rejected": g_r,
                "p_chosen": p if a_wins else 1 - p,
            }
        )

    def best_of(texts: list[str], n: int, seed: int) -> tuple[list[str], list[float]]:
        samples = draw(texts, n, seed)
        golds = score(samples)
        best = [max(range(len(g)), key=g.__getitem__) for g in golds]
        return [s[i] for s, i in zip(samples, best)], [g[i] for g, i in zip(golds, best)]

    demo_texts, demo_gold = best_of(demo_prompts, demo_n, config.seed * 10 + 3)
    demonstrations = [{"prompt": p, "completion": c, "gold": g} for p, c, g in zip(demo_prompts, demo_texts, demo_gold)]

    log(f"sampling base and best-of-{config.best_of} references for {len(val) + len(test)} evaluation prompts")
    references = {}
    for split, texts, seed in (("validation", val, 4), ("test", test, 5)):
        base_samples = draw(texts, config.eval_samples, config.seed * 10 + seed)
        base_gold = score(base_samples)
        best_texts, best_gold = best_of(texts, config.best_of, config.seed * 10 + seed + 2)
        references[split] = [
            {"prompt": p, "base_completions": s, "base_gold": g, "best_completion": bt, "best_gold": bg}
            for p, s, g, bt, bg in zip(texts, base_samples, base_gold, best_texts, best_gold)
        ]

    os.makedirs(out, exist_ok=True)
    for name, rows in (
        ("prompts_train", [{"prompt": p} for p in demo_prompts + pref_prompts]),
        ("prompts_validation", [{"prompt": p} for p in val]),
        ("prompts_test", [{"prompt": p} for p in test]),
        ("demonstrations", demonstrations),
        ("preferences", preferences),
        ("references_validation", references["validation"]),
        ("references_test", references["test"]),
    ):
        _write_jsonl(os.path.join(out, f"{name}.jsonl"), rows)

    test_base = [g for r in references["test"] for g in r["base_gold"]]
    merged = {
        "training_rows": boundary_merges(
            tokenizer,
            [(r["prompt"], [r["completion"]]) for r in demonstrations]
            + [(r["prompt"], [r["chosen"], r["rejected"]]) for r in preferences],
        ),
        "validation_rows": boundary_merges(
            tokenizer, [(r["prompt"], r["base_completions"]) for r in references["validation"]]
        ),
    }
    card = {
        "task": ("Chat answer" if config.prompt_source == "chatterbot" else "Shakespeare continuation")
        + ", gold = "
        + config.gold,
        "config": wanted,
        "regime": {"name": config.regime, "demo_best_of": demo_n, "bt_temperature_factor": factor},
        "sizes": {
            "prompts_train": len(demo_prompts) + len(pref_prompts),
            "prompts_validation": len(val),
            "prompts_test": len(test),
            "demonstrations": len(demonstrations),
            "preferences": len(preferences),
            "prompts_available": len(prompts),
        },
        "gold": {
            "base_samples": gold_statistics(flat_gold),
            "demonstrations": gold_statistics(demo_gold),
            "test_base_samples": gold_statistics(test_base),
            "test_best_of": gold_statistics([r["best_gold"] for r in references["test"]]),
        },
        "preferences": {
            "bt_temperature": temperature,
            "fraction_both_zero": sum(g[0] == 0 and g[1] == 0 for g in pref_gold) / len(pref_gold),
            "fraction_chosen_higher_gold": sum(r["gold_chosen"] > r["gold_rejected"] for r in preferences)
            / len(preferences),
            "fraction_tied_gold": sum(r["gold_chosen"] == r["gold_rejected"] for r in preferences) / len(preferences),
        },
        "boundary_merges": {k: len(v) for k, v in merged.items()},
        "R_base_test": sum(test_base) / len(test_base),
        "R_demo_test": gold_statistics([r["best_gold"] for r in references["test"]])["mean"],
        "seed": config.seed,
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(out, "card.md"), "w") as f:
        f.write(card_markdown(card))
    tmp = card_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(card, f, indent=2)
    os.replace(tmp, card_path)  # the card last: a folder without it is incomplete
    log(f"task data in {out} ({card['seconds']:.0f} s)")
    if merged["training_rows"] or merged["validation_rows"]:
        prompt, answer = (merged["training_rows"] or merged["validation_rows"])[0]
        log(
            f"note: in {len(merged['training_rows'])} of {len(demonstrations) + len(preferences)} training rows and "
            f"{len(merged['validation_rows'])} of {len(val)} validation prompts a sampled continuation starts inside "
            f"the prompt's last word (e.g. {prompt.split()[-1]!r} + {answer.split()[0]!r}); training moves that "
            "word's token into the completion (docs/data.md); the benchmark's runs do not repeat aihf's warning"
        )
    return out


def boundary_merges(tokenizer, rows: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """The (prompt, answer) of each row of ``(prompt, answers)`` where an answer's first token
    merges with the prompt's last one when prompt + answer is tokenised as one text, as aihf's
    trainers tokenise it (:mod:`aihf.data.tokenize`): a base sample that continues the prompt's
    last word (``"trust" + "ed"``). At most one per row."""
    out = []
    for prompt, answers in rows:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for answer in answers:
            if tokenizer(prompt + answer, add_special_tokens=False)["input_ids"][: len(ids)] != ids:
                out.append((prompt, answer))
                break
    return out


def card_markdown(card: dict) -> str:
    g = card["gold"]
    regime = card["regime"]
    lines = [
        f"# Data card: {card['task']}",
        "",
        "| split | size |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in card["sizes"].items()),
        "",
        "| gold of | n | mean | std | non-zero | positive | min | max |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {k} | {s['n']} | {s['mean']:.3f} | {s['std']:.3f} | {s['fraction_nonzero']:.2f} | "
            f"{s['fraction_positive']:.2f} | {s['min']:.3f} | {s['max']:.3f} |"
            for k, s in g.items()
        ),
        "",
        f"Preference labels: one Bradley-Terry draw per pair at temperature {card['preferences']['bt_temperature']:.4f}"
        f"; both samples gold 0 in {card['preferences']['fraction_both_zero']:.2f} of pairs; chosen has the higher "
        f"gold in {card['preferences']['fraction_chosen_higher_gold']:.2f}, ties in "
        f"{card['preferences']['fraction_tied_gold']:.2f}.",
        "",
        f"Regime {regime['name']}: demonstrations are the best of {regime['demo_best_of']} base samples (mean gold "
        f"{g['demonstrations']['mean']:.3f}); pair labels at {regime['bt_temperature_factor']:g} x the base samples' "
        f"gold std (chosen has the higher gold in {card['preferences']['fraction_chosen_higher_gold']:.2f} of pairs).",
        "",
        f"Continuations that start inside the prompt's last word (one token across the prompt/completion boundary "
        f"when tokenised as one text): {card['boundary_merges']['training_rows']} training rows, "
        f"{card['boundary_merges']['validation_rows']} validation prompts.",
        "",
        f"R_base (test) = {card['R_base_test']:.4f}; R_demo (test, best-of-n) = {card['R_demo_test']:.4f}; "
        f"seed {card['seed']}; built in {card['seconds']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def gold_profile(
    lengths: list[int],
    *,
    base_model: str | None = None,
    gold: str = DEFAULT_GOLD,
    num_prompts: int = 200,
    samples: int = 2,
    seed: int = 0,
    log=print,
) -> list[dict]:
    """Gold statistics of base-model continuations of each length in ``lengths`` on the first
    ``num_prompts`` training prompts: how informative the gold is at that length."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gold_fn = load_gold(gold)
    base_dir = base_model or base_model_dir(log=log)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    _, held_out = split_corpus(load_plays())
    prompts = make_prompts(held_out, prefix_words=6, seed=seed)[-num_prompts:]  # never a test prompt
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    rows = []
    for length in lengths:
        drawn = sample_continuations(
            model,
            ids,
            num_samples=samples,
            length=length,
            seed=seed,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        values = [float(gold_fn(tokenizer.decode(s, skip_special_tokens=True))) for per in drawn for s in per]
        rows.append({"continuation_tokens": length, **gold_statistics(values)})
        log(json.dumps(rows[-1]))
    return rows
