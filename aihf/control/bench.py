"""``aihf control bench``: the control benchmark table.

For each env: ``collect`` once (demonstrator, demonstrations, pool, labelled pairs), then one
``train`` run per (setting, method, seed). A setting is a demonstration source and count
(``expert1``: one expert demonstration, ``low1``: one demonstration of the middle-quality
snapshot) and a number of preference pairs; at 0 pairs AIHF is ML-IRL. Each plan (``PLANS``) names the
methods run per setting: ``ml_irl`` and ``bc`` at 0 pairs; ``aihf`` (and, where the budget allows,
``two_stage``) above 0; ``pref_rl`` (which ignores demonstrations) once per pair count, in the
one-demonstration setting; the null rewards (``null_constant``, ``null_untrained``, which ignore the
data) once per env and seed, at 1 demonstration and 0 pairs, and every learned reward is compared
with them seed by seed (:mod:`aihf.control.null_table`); ``true_reward`` (SAC on the env's own reward,
what a perfect learned reward could reach at this budget) once per env and seed beside them.

Every run is one plain command (``--list`` prints them) that writes one result file
``<results>/run_results/<env>/<setting>__<method>__seed<k>.json``; runs whose file exists are skipped,
and a killed run resumes from its checkpoint in ``<work>`` (exactly: it ends as if never stopped).
``--train_flags`` adds flags to every run's command. ``--report`` (also run at the end)
writes ``results.json``, ``results.md`` and ``curves_<env>.png`` into ``<results>``;
``--reward_quality`` scores each finished run's learned reward on the preference pairs no run trained
on (:mod:`aihf.control.reward_quality`), which ranks the rewards where SAC's budget cannot.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass

from ..bench.runner import Job, Reporter, run_jobs
from .bench_report import METHOD_ORDER, NULLS, REFERENCE, load_results, report
from .speed import speed

# Each plan: envs, seeds and the runs of one (env, seed) as {setting: methods}. A setting is
# <demo source><count>_p<pairs>. At 0 pairs AIHF is ML-IRL, so p0 runs ml_irl (and bc); pref_rl ignores
# demonstrations, so it runs in one demonstration setting only; the null rewards ignore all data: once per env
# and seed, and so does the true-reward reference (REFERENCE: SAC on the env's reward).
BASE_P0 = ["ml_irl", "bc"]
PLANS = {
    "ci": dict(
        envs=["Pendulum-v1"],
        seeds=[0],
        # A smoke test: the ci preset's 5k-step demonstrator is within noise of random on Pendulum (-1484
        # against -1662), which collect refuses; "*" applies to every env (--envs).
        collect_flags={"*": ["--accept_weak_demonstrator", "true"]},
        runs={"expert1_p0": [*BASE_P0, *NULLS, *REFERENCE], "expert1_p10": ["aihf", "two_stage", "pref_rl"]},
    ),
    # 13 SAC runs (+3 BC) per env and seed; docs/control.md ("Presets and budgets") has the arithmetic.
    "cpu": dict(
        envs=["HalfCheetah-v5", "Hopper-v5"],
        seeds=[0, 1, 2],
        # The preset's 150k-step demonstrator falls after one or two hops on Hopper (return 281); twice
        # the steps with an update every step hops on (2059; benchmarks/results/control/NOTES.md).
        collect_flags={"Hopper-v5": ["--expert_steps", "300000", "--train_freq", "1"]},
        runs={
            "expert1_p0": [*BASE_P0, *NULLS, *REFERENCE],
            "expert1_p10": ["aihf", "pref_rl"],
            "expert1_p100": ["aihf", "pref_rl", "two_stage"],
            "expert4_p0": BASE_P0,
            "expert4_p100": ["aihf"],
            "low1_p0": BASE_P0,
            "low1_p100": ["aihf"],
        },
    ),
    # 300k env steps a run (the `long` train preset), 1 demonstration: 12 SAC runs (+2 BC) per env and
    # seed; docs/control.md ("The long preset") has the CPU-hours. Same data as `cpu`.
    "long": dict(
        envs=["HalfCheetah-v5", "Hopper-v5"],
        seeds=[0, 1, 2],
        collect_flags={"Hopper-v5": ["--expert_steps", "300000", "--train_freq", "1"]},
        runs={
            "expert1_p0": [*BASE_P0, *NULLS, *REFERENCE],
            "expert1_p10": ["aihf", "pref_rl", "two_stage"],
            "expert1_p100": ["aihf", "pref_rl", "two_stage"],
            "low1_p0": BASE_P0,
            "low1_p100": ["aihf"],
        },
    ),
    "paper": dict(
        envs=["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"],
        seeds=[0, 1, 2, 3, 4],
        runs={
            "expert1_p0": [*BASE_P0, *NULLS, *REFERENCE],
            **{f"expert{n}_p0": BASE_P0 for n in (4, 16)},
            **{f"expert{n}_p{p}": ["aihf", "two_stage"] for n in (1, 4) for p in (10, 50, 200, 1000)},
            **{f"expert1_p{p}": ["aihf", "two_stage", "pref_rl"] for p in (10, 50, 200, 1000)},
            "expert16_p200": ["aihf", "two_stage"],
            "low1_p0": BASE_P0,
            "low1_p200": ["aihf", "two_stage"],
        },
    ),
}
PYTHON = "python"  # as printed; runs use sys.executable


@dataclass(frozen=True)
class Run:
    env_id: str
    setting: str  # e.g. expert1_p10
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting}__{self.method}__seed{self.seed}"

    @property
    def demos(self) -> tuple[str, int]:
        source, count = self.setting.split("_")[0].rstrip("0123456789"), self.setting.split("_")[0]
        return ("demos_low.npz" if source == "low" else "demos.npz"), int(count[len(source) :])

    @property
    def num_preferences(self) -> int:
        return int(self.setting.split("_p")[1])


def plan(preset: str, envs: list[str] | None = None, seeds: list[int] | None = None) -> list[Run]:
    spec = PLANS[preset]
    return [
        Run(env_id, setting, method, seed)
        for env_id in envs or spec["envs"]
        for seed in (seeds if seeds is not None else spec["seeds"])
        for setting, methods in spec["runs"].items()
        for method in methods
    ]


def collect_argv(preset: str, env_id: str, data_root: str) -> list[str]:
    return [
        "collect",
        "--preset",
        preset,
        "--env_id",
        env_id,
        "--output_dir",
        os.path.join(data_root, env_id),
        "--progress",
        "false",
        *PLANS[preset].get("collect_flags", {}).get("*", []),
        *PLANS[preset].get("collect_flags", {}).get(env_id, []),
    ]


def train_argv(
    run: Run, preset: str, data_root: str, results: str, work: str, extra: list[str] | None = None
) -> list[str]:
    data = os.path.join(data_root, run.env_id)
    demo_file, n_demos = run.demos
    data_flags = [
        "--demonstrations",
        os.path.join(data, demo_file),
        "--num_demonstrations",
        str(n_demos),
        "--preferences",
        os.path.join(data, "preferences.npz"),
        "--num_preferences",
        str(run.num_preferences),
    ]
    return [
        "train",
        "--preset",
        preset,
        "--env_id",
        run.env_id,
        "--method",
        run.method,
        "--seed",
        str(run.seed),
        *([] if run.method in REFERENCE else data_flags),  # the env's reward reads no data
        "--reference_returns",
        os.path.join(data, "meta.json"),
        "--output_dir",
        os.path.join(work, run.env_id, run.name),
        "--result_file",
        result_path(results, run),
        "--progress",
        "false",
        *(extra or []),
    ]


def result_path(results: str, run: Run) -> str:
    return os.path.join(results, "run_results", run.env_id, run.name + ".json")


def _command(argv: list[str], python: str = PYTHON) -> str:
    return shlex.join([python, "-m", "aihf.control.cli", *argv])


def _execute(
    jobs: list[tuple[str, list[str], str]], parallel: int, nice: int, log_dir: str, lock_dir: str
) -> list[str]:
    """Run (label, argv, done_file) jobs, ``parallel`` at a time, with a progress bar; returns the
    labels that failed. Each run holds ``<lock_dir>/<label>.lock`` for its lifetime; a run whose lock
    is held (a copy still running from an earlier sweep) is skipped, saying so (:mod:`aihf.bench.runner`)."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    runs = [Job(label, [*prefix, sys.executable, "-m", "aihf.control.cli", *argv], done) for label, argv, done in jobs]
    os.makedirs(log_dir, exist_ok=True)
    return run_jobs(runs, parallel, lock_dir=lock_dir, log_dir=log_dir, poll_s=2, reporter=_BarReporter(len(runs)))


class _BarReporter(Reporter):
    """A tqdm bar over the runs, one line written above it per run skipped or ended."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        super().__init__(total)
        self.bar, self.running = tqdm(total=total, desc="control bench", unit="run"), []

    def skipped(self, job: Job, why: str) -> None:
        self.bar.write(f"{job.name}: skipped, " + ("already running elsewhere" if why == "running" else "already done"))
        self.bar.update(1)

    def started(self, job: Job, running: int, queued: int, in_process: bool) -> None:
        self.running.append(job.name)
        self.bar.set_postfix_str(f"running: {', '.join(self.running)}"[:120])

    def finished(self, job: Job, seconds: float) -> None:
        self._ended(job, "ok", seconds)

    def failed(self, job: Job, returncode: int, log_path: str, seconds: float) -> None:
        self._ended(job, f"FAILED (exit {returncode}, see {log_path})", seconds)

    def _ended(self, job: Job, status: str, seconds: float) -> None:
        self.running.remove(job.name)
        self.bar.write(f"{job.name}: {status} in {seconds:.0f}s")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _remove_partial_results(results: str) -> None:
    """Delete the ``.tmp`` files a killed sweep left (a result is renamed into place only once
    complete, so they never count; this keeps the folder clean)."""
    root = os.path.join(results, "run_results")
    for folder, _, names in os.walk(root):
        for name in names:
            if name.endswith(".tmp"):
                os.remove(os.path.join(folder, name))


# ------------------------------------------------------------------------------------------ speed
# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    from .config import OneLineParser

    parser = OneLineParser(prog="aihf control bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PLANS), default="cpu", help="Budgets and the table's settings.")
    parser.add_argument("--envs", default=None, help="Comma-separated env ids (default: the preset's).")
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds (default: the preset's).")
    parser.add_argument("--only", default=None, help="Run only runs whose name contains this (e.g. __aihf__).")
    parser.add_argument("--data_root", default="benchmarks/data/control", help="Collected data, one folder per env.")
    parser.add_argument(
        "--results",
        default=None,
        help="Result files and the table (default: benchmarks/results/control, or control-<preset> for other presets "
        "than cpu, so that presets never share a result file).",
    )
    parser.add_argument(
        "--work", default=None, help="Checkpoints of unfinished runs (default: runs/control-bench[-<preset>])."
    )
    parser.add_argument("--jobs", type=int, default=1, help="Runs in parallel (one core each).")
    parser.add_argument("--nice", type=int, default=0, help="Run each command under nice -n N.")
    parser.add_argument(
        "--train_flags",
        default="",
        help="Extra 'aihf control train' flags for every run, e.g. '--eval_episodes 10' (part of each run's command).",
    )
    parser.add_argument("--list", action="store_true", help="Print every run's command (done ones commented out).")
    parser.add_argument("--report", action="store_true", help="Only aggregate the finished runs.")
    parser.add_argument(
        "--speed",
        action="store_true",
        help="Instead: env steps/s of the AIHF loop vs plain SAC on the first env (alternated runs).",
    )
    parser.add_argument(
        "--segments",
        action="store_true",
        help="Instead: what a reward fitted on preference pairs alone learns, by segment design (independent or "
        "aligned windows of 1, 10, 50 steps, whole episodes), scored on held-out pool episodes; needs "
        "<data_root>/<env>/pool.npz (not committed). Writes segments.json, .md and .png (docs/control.md, "
        "'Preference segments').",
    )
    parser.add_argument(
        "--reward_quality",
        action="store_true",
        help="Instead: score each finished run's learned reward on the preference pairs no run trained on (from the "
        "preset's largest pair count on), against the true returns; reads the run folders under --work. Writes "
        "reward_quality.json and .md (docs/control.md, 'Learned rewards on held-out pairs').",
    )
    parser.add_argument(
        "--segment_reward_steps", type=int, default=500, help="--segments: reward steps per design and seed."
    )
    parser.add_argument("--speed_steps", type=int, default=10_000, help="--speed: env steps per run.")
    parser.add_argument("--speed_repeats", type=int, default=2, help="--speed: runs of each.")
    parser.add_argument(
        "--speed_backends",
        default=None,
        help="Instead: env steps per CPU-second of plain SB3 SAC against these variants, alternated, one process a "
        "run, with --speed_steps and --speed_repeats (e.g. 'sbx,sb3:n_envs=2,sb3:train_freq=4,aihf:sb3,aihf:sbx'; "
        "sbx needs aihf[sbx]); the paper preset's SAC sizes with --preset paper, else the cpu preset's. Writes "
        "speed_backends_<env>.json and .md (docs/control.md, 'Speed').",
    )
    args = parser.parse_args(argv)
    suffix = "" if args.preset == "cpu" else f"-{args.preset}"  # the cpu table's folders predate the others
    args.results = args.results or f"benchmarks/results/control{suffix}"
    args.work = args.work or f"runs/control-bench{suffix}"
    if args.jobs < 1:
        parser.error(f"argument --jobs: must be >= 1, got {args.jobs}")
    modes = ("list", "report", "speed", "speed_backends", "segments", "reward_quality")
    modes = [f"--{m}" for m in modes if getattr(args, m)]
    if len(modes) > 1:
        parser.error(f"argument {modes[1]}: not allowed with {modes[0]} (one of them at a time)")
    # dict.fromkeys: "--envs A,A" is one env, not every run twice
    envs = list(dict.fromkeys(e.strip() for e in args.envs.split(",") if e.strip())) if args.envs else None
    if args.envs is not None and not envs:
        parser.error(f"argument --envs: comma-separated env ids, got {args.envs!r}")
    try:  # "0,1," (a trailing comma) is two seeds, "x" a one-line error rather than a traceback
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()] if args.seeds else None
    except ValueError:
        seeds = []
    if seeds == [] or (seeds and (min(seeds) < 0 or len(set(seeds)) < len(seeds))):
        parser.error(f"argument --seeds: distinct comma-separated integers >= 0, e.g. 0,1,2, got {args.seeds!r}")
    if args.segments and args.only:
        parser.error("argument --only: selects benchmark runs; --segments fits rewards only (use --envs)")
    runs = [r for r in plan(args.preset, envs, seeds) if not args.only or args.only in f"{r.env_id}/{r.name}"]
    if args.only and not runs and not (args.report or args.speed or args.speed_backends or args.segments):
        # A typo would otherwise run nothing and exit 0.
        example = plan(args.preset, envs, seeds)[0]
        parser.error(
            f"argument --only: {args.only!r} matches no run of --preset {args.preset} "
            f"(names are <env>/<setting>__<method>__seed<N>, e.g. {example.env_id}/{example.name})"
        )
    this = shlex.join(["aihf", "control", "bench", *(argv if argv is not None else sys.argv[1:])])
    if args.report:
        if not load_results(args.results):
            from ..errors import ConfigError

            raise ConfigError(
                f"results={args.results!r}: no result files under {os.path.join(args.results, 'run_results')} "
                "to report (a typo in --results, or no run has finished)"
            )
        report(args.results, this, args.data_root)
        print(f"wrote {os.path.join(args.results, 'results.md')}")
        return 0
    if args.speed_backends:
        from .speed_backends import parse_variant, speed_backends

        variants = tuple(v.strip() for v in args.speed_backends.split(",") if v.strip())
        for v in variants:
            try:
                parse_variant(v)
            except ValueError as e:
                parser.error(f"argument --speed_backends: {e}")
        env_id = (envs or PLANS[args.preset]["envs"])[0]
        speed_backends(
            env_id,
            "paper" if args.preset == "paper" else "cpu",
            args.speed_steps,
            args.speed_repeats,
            os.path.join(args.results, f"speed_backends_{env_id}.json"),
            this,
            variants=variants,
            data_dir=os.path.join(args.data_root, env_id),
        )
        print(f"wrote {os.path.join(args.results, f'speed_backends_{env_id}.md')}")
        return 0
    if args.segments:
        from .segments import segments

        if args.segment_reward_steps < 1:
            parser.error(f"argument --segment_reward_steps: must be >= 1, got {args.segment_reward_steps}")
        segments(
            args.data_root,
            envs or PLANS[args.preset]["envs"],
            args.results,
            this,
            seeds=seeds or (0, 1, 2),
            steps=args.segment_reward_steps,
        )
        print(f"wrote {os.path.join(args.results, 'segments.md')}")
        return 0
    if args.reward_quality:
        from .reward_quality import ScoredRun, reward_quality

        scored = [
            ScoredRun(
                r.env_id, r.name, r.setting, r.method, r.seed, os.path.join(args.work, r.env_id, r.name),
                result_path(args.results, r),
            )
            for r in runs
        ]
        held_out_from = max(r.num_preferences for r in plan(args.preset))
        result = reward_quality(scored, args.data_root, held_out_from, args.results, this)
        notes = [f"scored {result['scored']} runs' rewards"]
        if result["missing"]:
            notes.append(f"{result['missing']} finished runs have no folder under {args.work}")
        if result["dropped"]:
            notes.append(f"dropped {result['dropped']} rows of the earlier report (their preference file changed)")
        print("; ".join([*notes, f"wrote {os.path.join(args.results, 'reward_quality.md')}"]))
        return 0
    if args.speed:
        env_id = (envs or PLANS[args.preset]["envs"])[0]
        result = speed(
            args.preset,
            env_id,
            os.path.join(args.data_root, env_id),
            args.speed_steps,
            args.speed_repeats,
            os.path.join(args.results, f"speed_{env_id}.json"),
            this,
        )
        print(json.dumps(result, indent=1))
        return 0
    envs_needed = sorted({r.env_id for r in runs})
    collects = [
        (f"collect {e}", collect_argv(args.preset, e, args.data_root), os.path.join(args.data_root, e, "meta.json"))
        for e in envs_needed
    ]
    trains = [
        (
            f"{r.env_id}/{r.name}",
            train_argv(r, args.preset, args.data_root, args.results, args.work, shlex.split(args.train_flags)),
            result_path(args.results, r),
        )
        for r in runs
    ]
    from .config import ControlConfig
    from .flags import parse_config

    for label, run_argv, _ in trains:  # a bad --train_flags fails here, not once per run
        parse_config(ControlConfig, run_argv[1:], "aihf control train", "").validate(f"the flags of run {label}")
    if args.list:
        for _, run_argv, done in collects + trains:
            print(("# done: " if os.path.exists(done) else "") + _command(run_argv))
        return 0
    _remove_partial_results(args.results)
    todo_collect = [j for j in collects if not os.path.exists(j[2])]
    todo_train = [j for j in trains if not os.path.exists(j[2])]
    print(
        f"{len(collects) - len(todo_collect)}/{len(collects)} data sets and {len(trains) - len(todo_train)}/"
        f"{len(trains)} runs already done"
    )
    log_dir, lock_dir = os.path.join(args.work, "logs"), os.path.join(args.results, "locks")
    failed = _execute(todo_collect, args.jobs, args.nice, log_dir, lock_dir) if todo_collect else []
    if failed:
        print(f"data collection failed: {failed}", file=sys.stderr)
        return 1
    failed = _execute(todo_train, args.jobs, args.nice, log_dir, lock_dir) if todo_train else []
    report(args.results, this, args.data_root)
    print(f"wrote {os.path.join(args.results, 'results.md')}")
    if failed:
        print(f"{len(failed)} runs failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
