"""``aihf bench llm``: every LLM alignment method on the same data, scored by an external gold reward.

The task is :mod:`aihf.tasks.sentiment` (continue Shakespeare so that VADER finds it positive).
Each method trains from the same base model on the same demonstrations and a random subset of
``budget`` preference pairs, for each budget of the sweep and each seed. Its hyper-parameters are
chosen from the same grid (learning rate x beta) on the validation prompts: the highest mean gold
reward among the grid points whose KL to the base stays under ``kl_cap``. The chosen grid point's
policy is evaluated on the test prompts at points along its training (its frontier); the report
reads each frontier at fixed KL levels (gold at matched KL, :mod:`aihf.bench.frontier`) before
the final points' table.

One run = one (method, budget, seed) = one result file ``run_results/<method>__<budget>__<seed>.json``;
finished runs are skipped, so an interrupted sweep resumes. ``--list`` prints each pending run as
one plain command (for a cluster scheduler); ``--jobs N`` runs N of them at once as processes.
At the end the results are aggregated into ``results.json``, ``results.md`` and PNG plots.

A method is one function ``train(ctx, hp) -> model`` (or ``(model, info)``, e.g. a reward model's
held-out pair accuracy) and one entry of :data:`aihf.bench.methods.METHODS`. This module is the
command, one run and the sweep; :mod:`.settings`, :mod:`.methods`, :mod:`.evaluation`,
:mod:`.frontier` and :mod:`.report` hold the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import sys
import time

from ..errors import ConfigError
from .evaluation import (  # noqa: F401  (the benchmark's public names, importable from here)
    FrontierRecorder,
    distinct_n,
    evaluate,
    frontier_point,
    held_out_pairs,
    held_out_samples,
    mean_ci,
    repetition_rate,
    select,
    snapshot,
    start_point,
)
from .methods import METHODS, RunContext, method_spec  # noqa: F401
from .report import aggregate, markdown, paired_differences, write_report  # noqa: F401
from .runner import Job, run_jobs
from .settings import (  # noqa: F401
    PRESETS,
    PROG,
    BenchArguments,
    all_runs,
    budgets,
    frontier_every,
    grid,
    method_names,
    resolve,
    result_path,
    run_args,
    run_command,
    run_name,
)


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


# --------------------------------------------------------------------------- one run
def do_run(args: BenchArguments, method: str, budget: int, seed: int, data_dir: str, *, log=print) -> dict:
    """Tune ``method`` on the grid, evaluate the chosen grid point's policy on the test prompts at
    points along its training (its frontier: the start, every ``max_steps / frontier_points``
    optimizer steps of each stage, each stage's end; the last point is the final model), and write
    the run's result file (atomically). Returns the result."""
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

    start, cpu_start = time.time(), time.process_time()
    name, demo_weight, pref_weight = method_spec(method)
    spec = METHODS[name]
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
    hps = [
        {"learning_rate": lr} | ({"beta": b} if b is not None else {})
        for lr in lrs
        for b in (betas if spec.uses_beta else [None])
    ]
    held_out = held_out_pairs(refs["validation"])
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
        eval_samples=held_out_samples(refs["validation"]),
        peft_config=peft_config(args),
        demo_weight=demo_weight,
        pref_weight=pref_weight,
    )
    eval_kw = dict(samples=args.eval_samples, length=args.continuation_tokens)

    def on_test(model) -> dict:  # the same samples' seed at every point and for every method (paired)
        return evaluate(model, base, tokenizer, refs["test"], gold_fn, seed=seed * 100 + 2, **eval_kw)

    # One grid point is the chosen one: its frontier is evaluated as it trains. With several, each
    # point's policies are kept (state dicts on the CPU) until the validation has chosen one.
    direct = len(hps) == 1
    points, recorders = [], []
    for hp in hps:
        recorder = FrontierRecorder(frontier_every(args), on_test if direct else snapshot)
        # A folder per grid point: trainers refuse an output_dir that holds another run.
        ctx = dataclasses.replace(ctx, output_dir=os.path.join(run_dir, f"point-{len(points)}"), callbacks=[recorder])
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
        points.append({"hp": hp, "validation": val, "train_seconds": round(train_seconds, 1), **info})
        recorders.append(recorder)
        best = select(points, args.kl_cap)
        for other, rec in zip(points, recorders):
            if other is not best:
                rec.points = []  # never chosen now: free its policies
        log(f"  {run_name(method, budget, seed)} {hp}: validation gold {val['gold']:.3f}, KL {val['kl']:.2f}")
    chosen = select(points, args.kl_cap)
    recorded = recorders[points.index(chosen)].points
    if not recorded or recorded[-1]["steps"] == 0:
        raise RuntimeError(f"{method}: no point was recorded at the end of training")
    evaluated = []
    for p in recorded:
        if direct:
            evaluated.append(p["value"])
        else:
            model = ctx.load_base()
            model.load_state_dict(p["value"])
            evaluated.append(on_test(model.eval()))
    frontier = [start_point(refs["test"])] + [
        frontier_point(r, p["steps"], p["stage"], p["step"]) for p, r in zip(recorded, evaluated)
    ]
    result = {
        "method": method,
        "budget": budget,
        "seed": seed,
        "num_demonstrations": len(demos) if method != "dpo" else 0,
        "demo_weight": demo_weight,
        "pref_weight": pref_weight,
        "selected": chosen["hp"],
        "reward_pair_accuracy": chosen.get("reward_pair_accuracy"),
        "reward_spearman": chosen.get("reward_spearman"),
        "selected_within_kl_cap": chosen["validation"]["kl"] <= args.kl_cap,
        "grid": points,
        "test": evaluated[-1],  # the final model
        "frontier": frontier,
        "wall_seconds": round(time.time() - start, 1),
        # CPU seconds of this run alone (all threads of the process from the start of this function:
        # not the imports of a run's own process, nor the runs before it in the same process).
        "cpu_seconds": round(time.process_time() - cpu_start, 1),
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
def sweep(args: BenchArguments, argv_prog: list[str], pending: list[tuple[str, int, int]], data_dir: str) -> None:
    """Do the pending runs, ``args.jobs`` at a time (in this process when 1), printing progress and an
    ETA (:mod:`aihf.bench.runner`); raises ``RuntimeError`` naming the runs that failed."""
    jobs = [
        Job(
            run_name(method, budget, seed),
            argv_prog + run_args(args, method, budget, seed),
            result_path(args, method, budget, seed),
            run_here=functools.partial(do_run, args, method, budget, seed, data_dir),
        )
        for method, budget, seed in pending
    ]
    failed = run_jobs(
        jobs,
        args.jobs,
        lock_dir=os.path.join(args.output_dir, "locks"),
        log_dir=os.path.join(args.output_dir, "logs"),
        env={"TOKENIZERS_PARALLELISM": "false"},
    )
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed: {', '.join(failed)}")


# --------------------------------------------------------------------------- entry point
def parse(argv: list[str]) -> BenchArguments:
    from ..commandline import HelpFormatter, argument_parser

    # One-line errors (exit 2) with "did you mean", and the help, as every aihf command.
    description = "Every LLM alignment method on the built-in sentiment task, scored by a gold reward."
    parser = argument_parser(
        BenchArguments,
        prog=PROG,
        usage=f"{PROG} [--preset quick|full|smollm2] [--field value ...]",
        description=description,
        formatter_class=HelpFormatter,
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
