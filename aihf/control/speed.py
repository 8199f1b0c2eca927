"""``aihf control bench --speed``: the AIHF loop's env steps per second against plain
stable-baselines3 SAC on the true reward (docs/control.md); the overhead of relabelling, reward
steps and checkpoints."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import numpy as np

from .config import ControlConfig, parse_sizes, with_preset
from .envs import make_env

__all__ = ["speed"]


def speed(preset: str, env_id: str, data_dir: str, steps: int, repeats: int, out: str, command: str) -> dict:
    """Env steps/s of the AIHF loop (1 demonstration, up to 100 pairs) against plain SB3 SAC on the
    true reward, same env, network, batch and update schedule (the preset's), alternated
    ``repeats`` times, by wall clock and by this process's CPU time. Returns and writes ``out`` (JSON)."""
    import torch
    from stable_baselines3 import SAC

    from .trainer import ControlTrainer

    base = with_preset(ControlConfig, preset, "train")
    rounds = max(1, steps // base.sac_steps_per_round)
    steps_per_run = rounds * base.sac_steps_per_round
    wall: dict[str, list[float]] = {"sac": [], "aihf": []}
    cpu: dict[str, list[float]] = {"sac": [], "aihf": []}

    def plain_sac(k):
        model = SAC(
            "MlpPolicy",
            make_env(env_id),
            learning_rate=base.sac_learning_rate,
            batch_size=base.batch_size,
            learning_starts=base.learning_starts,
            train_freq=base.train_freq,
            gradient_steps=base.gradient_steps,
            policy_kwargs={"net_arch": parse_sizes(base.net_arch)},
            seed=k,
            device="cpu",
            verbose=0,
        )
        model.learn(steps_per_run)

    def aihf_loop(k):
        with np.load(os.path.join(data_dir, "preferences.npz"), allow_pickle=False) as f:
            n_pairs = len(f["chosen_actions"])
        with tempfile.TemporaryDirectory() as tmp:
            config = dataclasses.replace(
                base,
                env_id=env_id,
                method="aihf",
                seed=k,
                rounds=rounds,
                eval_every=rounds,
                eval_episodes=1,
                demonstrations=os.path.join(data_dir, "demos.npz"),
                num_demonstrations=1,
                preferences=os.path.join(data_dir, "preferences.npz"),
                num_preferences=min(100, n_pairs),
                output_dir=tmp,
                progress=False,
            )
            ControlTrainer(config).train()

    torch.set_num_threads(1)
    for k in range(repeats):
        # ABBA order, so a load that drifts during the measurement hits both alike.
        for name in ("sac", "aihf") if k % 2 == 0 else ("aihf", "sac"):
            t0, c0 = time.perf_counter(), time.process_time()
            (plain_sac if name == "sac" else aihf_loop)(k)
            wall[name].append(steps_per_run / (time.perf_counter() - t0))
            cpu[name].append(steps_per_run / (time.process_time() - c0))
        print(f"repeat {k}: CPU-time steps/s SAC {cpu['sac'][-1]:.0f}, AIHF loop {cpu['aihf'][-1]:.0f}", flush=True)
    result = {
        "env_id": env_id,
        "preset": preset,
        "env_steps_per_run": steps_per_run,
        "net_arch": base.net_arch,
        "batch_size": base.batch_size,
        "train_freq": base.train_freq,
        "cpu_time_steps_per_s": cpu,
        "wall_steps_per_s": wall,
        "overhead_cpu_time": 1.0 - float(np.mean(cpu["aihf"]) / np.mean(cpu["sac"])),
        "overhead_wall": 1.0 - float(np.mean(wall["aihf"]) / np.mean(wall["sac"])),
        "command": command,
        "note": "AIHF figures include building the run, checkpoints after every round and one evaluation "
        "episode; alternated (ABBA) single-threaded runs on a shared 2-core machine: wall-clock figures are "
        "noisy, process CPU time less so",
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return result
