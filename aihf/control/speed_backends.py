"""``aihf control bench --speed_backends``: env steps per CPU-second of plain SAC on the true
reward in stable-baselines3 (torch) against sbx (JAX), same env, nets, batch and update schedule.

Each run is its own process (``python -m aihf.control.speed_backends worker ...``), so one
backend's threads, JIT caches and allocator never touch the other's; runs alternate in ABBA order
so that a load drifting during the measurement hits both alike, and the figure of merit is the
ratio within each pair (docs/control.md "Speed"). Torch and XLA are held to one thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

__all__ = ["SETTINGS", "parse_variant", "run_one", "speed_backends", "write_markdown"]

# The presets' SAC settings (aihf/control/config.py): ``cpu`` (and ``long``), and ``paper``.
SETTINGS = {
    "cpu": {"net_arch": [64, 64], "batch_size": 128, "train_freq": 2, "gradient_steps": 1, "learning_starts": 1000},
    "paper": {"net_arch": [256, 256], "batch_size": 256, "train_freq": 1, "gradient_steps": 1, "learning_starts": 1000},
}

# One thread for XLA's CPU backend, as torch.set_num_threads(1) is for torch; set before jax is imported.
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _cpu_seconds() -> float:
    # This process's user + system time over all its threads (XLA may start some of its own).
    return time.process_time()


def _schedule(setting: str, n_envs: int, train_freq: int | None) -> tuple[int, int]:
    """(train_freq, gradient_steps) of ``setting`` with ``n_envs`` envs stepped together: the same
    gradient steps per env step (train_freq counts steps of all envs at once), or
    ``1 / train_freq`` of them when ``train_freq`` is given."""
    s = SETTINGS[setting]
    freq = train_freq or s["train_freq"]
    ratio = s["gradient_steps"] / freq
    vec_freq = max(1, freq // n_envs)
    return vec_freq, max(1, round(ratio * n_envs * vec_freq))


def run_one(
    backend: str,
    env_id: str,
    setting: str,
    steps: int,
    seed: int,
    n_envs: int = 1,
    train_freq: int | None = None,
    loop: str = "sac",
    data_dir: str | None = None,
    eval_episodes: int = 0,
) -> dict:
    """Train for ``steps`` env steps (summed over ``n_envs`` envs) in this process and time it:
    plain SAC on the true reward (``loop="sac"``) or the AIHF loop (``loop="aihf"``: 1
    demonstration and up to 100 pairs from ``data_dir``, a checkpoint and one evaluation episode
    per round of the preset named ``setting``, as ``aihf control bench --speed``).

    Returns a dict: ``learn_cpu_s``/``learn_wall_s`` (training alone, JIT compilation
    included), ``setup_cpu_s``/``setup_wall_s`` (imports and model construction),
    ``cpu_steps_per_s``/``wall_steps_per_s`` (steps over training time; the AIHF loop's include
    building the run), ``steady_cpu_steps_per_s`` (the AIHF loop's rounds after the first) and, with
    ``eval_episodes``, ``eval_return`` (plain SAC's mean deterministic return, ground truth).
    """
    c0, t0 = _cpu_seconds(), time.perf_counter()
    os.environ.setdefault("XLA_FLAGS", XLA_ONE_THREAD)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import torch

    torch.set_num_threads(1)
    if backend not in ("sb3", "sbx"):
        raise ValueError(f"backend {backend!r}: use sb3 or sbx")
    freq, grad = _schedule(setting, n_envs, train_freq)
    out = {"backend": backend, "loop": loop, "env_id": env_id, "setting": setting, "n_envs": n_envs}
    out.update(train_freq=freq, gradient_steps=grad, seed=seed)
    if loop == "aihf":
        if n_envs != 1:
            raise ValueError("the AIHF loop steps one env")
        trainer = _aihf_trainer(backend, env_id, setting, steps, seed, data_dir, freq, grad)
        starts = []  # CPU time at the start of each round
        start_episode = trainer._start_episode
        trainer._start_episode = lambda r: (starts.append(_cpu_seconds()), start_episode(r))
        c1, t1 = _cpu_seconds(), time.perf_counter()
        done = trainer.train()["final"]["env_steps"]
        if len(starts) > 1:  # rounds 2.. alone: without imports, model construction and JIT compilation
            per_round = done // len(starts)
            out["steady_cpu_steps_per_s"] = per_round * (len(starts) - 1) / (_cpu_seconds() - starts[1])
    else:
        from stable_baselines3.common.env_util import make_vec_env

        if backend == "sbx":
            from sbx import SAC
        else:
            from stable_baselines3 import SAC
        model = SAC(
            "MlpPolicy",
            make_vec_env(env_id, n_envs=n_envs, seed=seed),
            learning_rate=3e-4,
            batch_size=SETTINGS[setting]["batch_size"],
            learning_starts=SETTINGS[setting]["learning_starts"],
            train_freq=freq,
            gradient_steps=grad,
            policy_kwargs={"net_arch": SETTINGS[setting]["net_arch"]},
            seed=seed,
            device="cpu",
            verbose=0,
        )
        c1, t1 = _cpu_seconds(), time.perf_counter()
        model.learn(steps)
        done = model.num_timesteps
    c2, t2 = _cpu_seconds(), time.perf_counter()
    out.update(
        steps=int(done),
        setup_cpu_s=c1 - c0,
        setup_wall_s=t1 - t0,
        learn_cpu_s=c2 - c1,
        learn_wall_s=t2 - t1,
        cpu_steps_per_s=done / (c2 - c1),
        wall_steps_per_s=done / (t2 - t1),
    )
    if eval_episodes and loop == "sac":
        from stable_baselines3.common.evaluation import evaluate_policy

        mean, _ = evaluate_policy(model, make_vec_env(env_id, n_envs=1, seed=seed + 1000), eval_episodes)
        out["eval_return"] = float(mean)
    return out


def _aihf_trainer(backend, env_id, setting, steps, seed, data_dir, train_freq, gradient_steps):
    import dataclasses
    import tempfile

    import numpy as np

    from .config import ControlConfig, with_preset
    from .trainer import ControlTrainer

    if not data_dir:
        raise ValueError("loop=aihf needs data_dir (demos.npz and preferences.npz of env_id)")
    with np.load(os.path.join(data_dir, "preferences.npz"), allow_pickle=False) as f:
        n_pairs = len(f["chosen_actions"])
    base = with_preset(ControlConfig, setting, "train")  # the preset's reward settings too
    s, per_round = SETTINGS[setting], base.sac_steps_per_round
    rounds = max(1, steps // per_round)
    config = dataclasses.replace(
        base,
        env_id=env_id,
        method="aihf",
        sac_backend=backend,
        seed=seed,
        rounds=rounds,
        sac_steps_per_round=per_round,
        eval_every=rounds,
        eval_episodes=1,
        final_eval_episodes=1,
        net_arch=",".join(map(str, s["net_arch"])),
        batch_size=s["batch_size"],
        learning_starts=s["learning_starts"],
        train_freq=train_freq,
        gradient_steps=gradient_steps,
        demonstrations=os.path.join(data_dir, "demos.npz"),
        num_demonstrations=1,
        preferences=os.path.join(data_dir, "preferences.npz"),
        num_preferences=min(100, n_pairs),
        output_dir=tempfile.mkdtemp(prefix="aihf-speed-"),
        progress=False,
    )
    return ControlTrainer(config)


def _spawn(python: str, variant: dict, **kw) -> dict:
    args = [python, "-m", "aihf.control.speed_backends", "worker"]
    for k, v in {**variant, **kw}.items():
        if v is not None:
            args += [f"--{k}", str(v)]
    env = {**os.environ, "XLA_FLAGS": XLA_ONE_THREAD, "JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise RuntimeError(f"{variant} worker failed (exit {proc.returncode}): {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def parse_variant(text: str) -> dict:
    """``"sbx"``, ``"sb3:n_envs=2"``, ``"aihf:sbx"``, ``"sb3:train_freq=4"`` (comma-separated
    options after the colon) as worker settings: backend, loop, n_envs, train_freq."""
    head, _, opts = text.partition(":")
    v = {"backend": head, "loop": "sac", "n_envs": 1, "train_freq": None}
    if head == "aihf":
        v["loop"], v["backend"], opts = "aihf", *(opts.split(",", 1) + [""])[:2]
    if v["backend"] not in ("sb3", "sbx"):
        raise ValueError(f"variant {text!r}: the backend must be sb3 or sbx")
    for opt in filter(None, opts.split(",")):
        key, _, value = opt.partition("=")
        if key not in ("n_envs", "train_freq") or not value.isdigit() or int(value) < 1:
            raise ValueError(f"variant {text!r}: options are n_envs=N and train_freq=N (N >= 1)")
        v[key] = int(value)
    return v


def speed_backends(
    env_id: str,
    setting: str,
    steps: int,
    pairs: int,
    out: str,
    command: str,
    python: str = sys.executable,
    variants: tuple[str, ...] = ("sbx",),
    data_dir: str | None = None,
) -> dict:
    """Alternate ``pairs`` rounds of runs (plain sb3 SAC first, then each of ``variants`` (see
    :func:`parse_variant`); reversed every other round) of ``steps`` env steps each, one process
    per run, with ``python`` (an interpreter where sb3, and sbx if a variant uses it, import).
    Writes ``out`` (JSON) and the same name with ``.md``; returns the JSON dict. Ratios are each
    variant's env steps per second over plain sb3's within the same round."""
    import numpy as np

    names = ["sb3", *variants]
    specs = {n: parse_variant(n) for n in names}
    # The AIHF loop on sbx is compared with the AIHF loop on sb3 when both are measured.
    baseline = {n: "aihf:sb3" if n.startswith("aihf:") and "aihf:sb3" in names[:i] else "sb3" for i, n in enumerate(names)}
    runs: list[dict] = []
    for k in range(pairs):
        got = {}
        for n in names if k % 2 == 0 else names[::-1]:
            r = _spawn(python, specs[n], env_id=env_id, setting=setting, steps=steps, seed=k, data_dir=data_dir)
            got[n] = r = {**r, "pair": k, "variant": n}
            runs.append(r)
            print(f"pair {k}: {n}: {r['cpu_steps_per_s']:.0f} env steps per CPU-s", flush=True)
        for n in variants:
            b = got[baseline[n]]
            got[n]["ratio_to"] = baseline[n]
            for kind in ("cpu", "wall", "steady_cpu"):
                if f"{kind}_steps_per_s" in got[n] and f"{kind}_steps_per_s" in b:
                    got[n][f"ratio_{kind}"] = got[n][f"{kind}_steps_per_s"] / b[f"{kind}_steps_per_s"]
    summary = {}
    for n in names:
        rs = [r for r in runs if r["variant"] == n]
        summary[n] = {
            "median_cpu_steps_per_s": float(np.median([r["cpu_steps_per_s"] for r in rs])),
            "median_wall_steps_per_s": float(np.median([r["wall_steps_per_s"] for r in rs])),
            "median_setup_wall_s": float(np.median([r["setup_wall_s"] for r in rs])),
        }
        if all("steady_cpu_steps_per_s" in r for r in rs):
            summary[n]["median_steady_cpu_steps_per_s"] = float(np.median([r["steady_cpu_steps_per_s"] for r in rs]))
        if n != "sb3":
            summary[n]["ratio_to"] = baseline[n]
            for kind in ("cpu", "wall", "steady_cpu"):
                if all(f"ratio_{kind}" in r for r in rs):
                    summary[n][f"ratio_{kind}"] = [r[f"ratio_{kind}"] for r in rs]
                    summary[n][f"median_ratio_{kind}"] = float(np.median(summary[n][f"ratio_{kind}"]))
    result = {
        "env_id": env_id,
        "setting": setting,
        "sac": SETTINGS[setting],
        "env_steps_per_run": steps,
        "pairs": pairs,
        "summary": summary,
        "runs": runs,
        "command": command,
        "note": "one process per run, torch and XLA at one thread, alternated order on a shared 2-core machine: "
        "compare the per-pair ratios; training time includes sbx's JIT compilation; n_envs keeps the gradient "
        "steps per env step, train_freq=N changes them to 1/N",
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(write_markdown(result))
    return result


def write_markdown(result: dict) -> str:
    """The result as a short Markdown table (one row per variant, ratios against sb3)."""
    s = result["sac"]
    lines = [
        f"# SAC backends, {result['env_id']}, `{result['setting']}` settings",
        "",
        f"Medians over the pairs. {s['net_arch']} nets, batch {s['batch_size']}, train_freq {s['train_freq']}, "
        f"learning_starts {s['learning_starts']}; {result['env_steps_per_run']} env steps a run, "
        f"{result['pairs']} alternated pairs.",
        "",
        "| variant | env steps / CPU-s | env steps / wall-s | ratio, CPU (per pair) | median ratio | start-up wall-s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in result["summary"].items():
        per = ", ".join(f"{x:.2f}" for x in v.get("ratio_cpu", [])) or "-"
        med = f"{v['median_ratio_cpu']:.2f} (to {v['ratio_to']})" if "median_ratio_cpu" in v else "1"
        lines.append(
            f"| {name} | {v['median_cpu_steps_per_s']:.0f} | {v['median_wall_steps_per_s']:.0f} | {per} | {med} "
            f"| {v['median_setup_wall_s']:.1f} |"
        )
    steady = {n: v for n, v in result["summary"].items() if "median_steady_cpu_steps_per_s" in v}
    if steady:
        lines += ["", "The AIHF loop without building the run and its first round (imports, JIT compilation):", ""]
        for name, v in steady.items():
            ratio = f", {v['median_ratio_steady_cpu']:.2f}x {v['ratio_to']}" if "median_ratio_steady_cpu" in v else ""
            lines.append(f"* {name}: {v['median_steady_cpu_steps_per_s']:.0f} env steps / CPU-s{ratio}")
    lines += ["", f"Command: `{result['command']}`", "", result["note"] + ".", ""]
    return "\n".join(lines)


def _main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m aihf.control.speed_backends")
    p.add_argument("mode", choices=["worker"])
    p.add_argument("--backend", required=True, choices=["sb3", "sbx"])
    p.add_argument("--loop", default="sac", choices=["sac", "aihf"])
    p.add_argument("--env_id", required=True)
    p.add_argument("--setting", default="cpu", choices=sorted(SETTINGS))
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_envs", type=int, default=1)
    p.add_argument("--train_freq", type=int, default=None)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--eval_episodes", type=int, default=0)
    a = p.parse_args(argv)
    r = run_one(
        a.backend, a.env_id, a.setting, a.steps, a.seed, a.n_envs, a.train_freq, a.loop, a.data_dir, a.eval_episodes
    )
    print(json.dumps(r), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
