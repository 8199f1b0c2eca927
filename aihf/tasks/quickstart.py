"""``aihf quickstart``: the built-in default task, end to end, fully offline.

The task: reverse a sequence of 3-5 distinct letters (``"reverse : c a f ="`` -> ``"f a c"``).
Demonstrations show correct reversals; preference pairs prefer the correct reversal over a
plausible mistake (the sequence copied unreversed, or reversed with two letters swapped).
Held-out prompts never appear in training. The run

1. writes the data as JSONL and a tiny Llama (random weights) with its tokenizer to disk,
2. trains it through ``aihf train`` exactly as a user would (``--method`` picks the method),
3. reports greedy exact-match accuracy and preference accuracy on held-out data, before and
   after training, in ``results.json`` and a markdown table.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field

from ..errors import ConfigError

LETTERS = "a b c d e f g h".split()


@dataclass
class QuickstartArguments:
    output_dir: str = field(default="runs/quickstart", metadata={"help": "Where data, model and results go."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Write into an output_dir that holds another run (an 'aihf train' output: checkpoints or a "
            "model). A previous quickstart's data, models and results there are replaced either way."
        },
    )
    method: str = field(
        default="aihf",
        metadata={"help": "Method to train with.", "choices": ["aihf", "dpo", "sft", "spin", "sft_then_dpo"]},
    )
    demo_loss: str = field(
        default="nll", metadata={"help": "AIHF demonstration term.", "choices": ["nll", "self_play"]}
    )
    num_demonstrations: int = field(default=2000, metadata={"help": "Training demonstrations."})
    num_preferences: int = field(default=1000, metadata={"help": "Training preference pairs."})
    num_eval: int = field(default=200, metadata={"help": "Held-out prompts (and pairs) for evaluation."})
    max_steps: int = field(default=600, metadata={"help": "Optimizer steps."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak learning rate."})
    batch_size: int = field(default=32, metadata={"help": "Items per step (each: one demonstration and one pair)."})
    seed: int = field(default=0, metadata={"help": "Seed for data, model and training."})

    def __post_init__(self):
        # Checked before the task's files are written.
        for name in ("num_demonstrations", "num_eval", "max_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"--learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be in [0, 2**32 - 1], got {self.seed}")
        least = 0 if self.method in ("sft", "spin") else 1
        if self.num_preferences < least:
            raise ConfigError(
                f"--num_preferences must be >= {least} for --method {self.method}, got {self.num_preferences}"
            )


def make_task(args: QuickstartArguments) -> dict[str, list[dict]]:
    distinct = sum(math.perm(len(LETTERS), n) for n in (3, 4, 5))
    wanted = args.num_demonstrations + args.num_preferences + args.num_eval
    if wanted > distinct:
        raise ConfigError(
            f"num_demonstrations + num_preferences + num_eval = {wanted} examples, but the task has only "
            f"{distinct} distinct ones"
        )
    rng = random.Random(args.seed)
    seen: set[str] = set()

    def fresh() -> list[str]:
        while True:
            s = rng.sample(LETTERS, rng.randint(3, 5))
            if " ".join(s) not in seen:
                seen.add(" ".join(s))
                return s

    def prompt(s: list[str]) -> str:
        return "reverse : " + " ".join(s) + " ="

    def answer(letters) -> str:
        # The space belongs to the answer: prompt + completion is read as one text ("= f a c").
        return " " + " ".join(letters)

    def mistake(s: list[str]) -> list[str]:
        if rng.random() < 0.5:
            return list(s)
        r = list(reversed(s))
        i = rng.randrange(len(r) - 1)
        r[i], r[i + 1] = r[i + 1], r[i]
        return r

    def pair(s: list[str]) -> dict:
        return {"prompt": prompt(s), "chosen": answer(reversed(s)), "rejected": answer(mistake(s))}

    demos = [
        {"prompt": prompt(s), "completion": answer(reversed(s))}
        for s in (fresh() for _ in range(args.num_demonstrations))
    ]
    prefs = [pair(fresh()) for _ in range(args.num_preferences)]
    eval_seqs = [fresh() for _ in range(args.num_eval)]
    return {
        "demonstrations": demos,
        "preferences": prefs,
        "eval_prompts": [{"prompt": prompt(s), "answer": " ".join(reversed(s))} for s in eval_seqs],
        "eval_preferences": [pair(s) for s in eval_seqs],
    }


def write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def evaluate(model_dir: str, task: dict) -> dict[str, float]:
    """Greedy exact match on held-out prompts, and how often the model's log-prob ranks the
    correct answer above the mistake on held-out pairs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..data import pad_sequences, prepare_preferences
    from ..llm.logprobs import sequence_logps

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tok.padding_side = "left"
    prompts = [r["prompt"] for r in task["eval_prompts"]]
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(
            **enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
        )
    answers = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    exact = sum(a.split() == r["answer"].split() for a, r in zip(answers, task["eval_prompts"])) / len(prompts)

    pairs = prepare_preferences(task["eval_preferences"], tok)
    n = len(pairs)
    batch = pad_sequences(
        list(pairs["prompt_ids"]) * 2, list(pairs["chosen_ids"]) + list(pairs["rejected_ids"]), tok.pad_token_id
    )
    with torch.no_grad():
        logps = sequence_logps(model, **batch)[0]
    pref_acc = (logps[:n] > logps[n:]).float().mean().item()
    return {"exact_match": exact, "preference_accuracy": pref_acc, "eval_logp_correct": logps[:n].mean().item()}


def main(argv: list[str]) -> int:
    from ..commandline import HelpFormatter, argument_parser
    from ..methods import ignored_options
    from ..cli.train import train
    from ..llm.runs import check_output_dir
    from .tiny import build_model, build_word_tokenizer

    parser = argument_parser(
        QuickstartArguments,
        prog="aihf quickstart",
        usage="aihf quickstart [--method NAME] [--output_dir PATH] [--field value ...]",
        description="The built-in task, offline, end to end: writes demonstrations, preference pairs and a tiny "
        "Llama under output_dir, trains it through 'aihf train' and reports held-out exact match and preference "
        "accuracy before and after (results.json, results.md).",
        formatter_class=HelpFormatter,
    )
    args = QuickstartArguments(**vars(parser.parse_args(argv)))
    remedy = "choose another --output_dir, or add --overwrite_output_dir to write the quickstart into it"
    check_output_dir(args.output_dir, args.overwrite_output_dir, remedy)
    task = make_task(args)  # checks the sizes before anything is written
    os.makedirs(args.output_dir, exist_ok=True)
    data_dir = os.path.join(args.output_dir, "data")
    os.makedirs(data_dir, exist_ok=True)
    for name in ("demonstrations", "preferences"):
        write_jsonl(os.path.join(data_dir, f"{name}.jsonl"), task[name])

    base_dir = os.path.join(args.output_dir, "base_model")
    tokenizer = build_word_tokenizer(["reverse : ="] + LETTERS)
    model = build_model(tokenizer, "llama", hidden_size=64, num_layers=2, num_heads=4, seed=args.seed)
    model.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    before = evaluate(base_dir, task)

    model_dir = os.path.join(args.output_dir, "model")
    flags = {
        "model_name_or_path": base_dir,
        "demonstrations": os.path.join(data_dir, "demonstrations.jsonl"),
        "preferences": os.path.join(data_dir, "preferences.jsonl"),
        "output_dir": model_dir,
        "overwrite_output_dir": True,  # the quickstart rebuilds everything: a rerun replaces the last one
        "method": args.method,
        "demo_loss": args.demo_loss,
        "max_steps": args.max_steps,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 30,
        "weight_decay": 0.0,
        "per_device_train_batch_size": args.batch_size,
        "beta": 0.1,
        "logging_steps": 50,
        "save_strategy": "no",
        "seed": args.seed,
        "max_new_tokens": 8,
        "report_to": "none",
    }
    if args.method == "sft_then_dpo":
        flags["sft_max_steps"] = args.max_steps
    # The flags are shared by every method: those this one does not use are left out, not warned about.
    ignored = ignored_options(args.method, args.demo_loss)
    argv_train = [x for k, v in flags.items() if k not in ignored for x in (f"--{k}", str(v))]
    start = time.time()
    with contextlib.redirect_stdout(sys.stderr):  # the training's progress; stdout: the table and paths
        train(argv_train)
    seconds = time.time() - start
    final_dir = os.path.join(model_dir, "dpo") if args.method == "sft_then_dpo" else model_dir
    after = evaluate(final_dir, task)

    results = {
        "task": "reverse letters (built-in quickstart)",
        "args": asdict(args),
        "train_seconds": seconds,
        "before": before,
        "after": after,
        "command": "aihf quickstart " + " ".join(argv),
    }
    with open(os.path.join(args.output_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = [
        f"| {args.method} | before | after |",
        "|---|---|---|",
        *(f"| {k} | {before[k]:.3f} | {after[k]:.3f} |" for k in before),
        f"| train seconds | | {seconds:.0f} |",
    ]
    with open(os.path.join(args.output_dir, "results.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n" + "\n".join(table))
    print(f"\nResults: {os.path.join(args.output_dir, 'results.json')}; model: {final_dir}")
    return 0
