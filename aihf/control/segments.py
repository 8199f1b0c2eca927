"""``aihf control bench --segments``: what a reward learns from preference pairs, by the design of
their segments (docs/control.md, "Preference segments").

For each env, the collected pool (``pool.npz``: the random policy and the demonstrator's snapshots,
with the true per-step rewards) is split by episode: even-numbered episodes are labelled into pairs
(:func:`aihf.control.data.label_preferences`), odd-numbered ones are held out. A reward is fitted on
the pairs alone, exactly as preference-only RL pretrains it (the Bradley-Terry term of
:func:`aihf.control.reward.reward_loss`, the trainer's defaults for the net, batch and learning
rate), and scored on the held-out episodes by

* ``step_spearman``: Spearman's rank correlation of the learned and the true reward over every
  held-out step -- whether the reward learned *what* is good, state by state;
* ``return_spearman``: the same over held-out whole episodes' summed rewards. On an env whose
  episodes end early (Hopper) the episode length alone ranks returns well, so the table also shows
  that of a constant reward ("length only"): a design that does not beat it learned no content;
* ``pair_accuracy``: agreement with the true return on held-out pairs of independent 50-step
  windows (the benchmark's default pairs; a tie counts one half).

Designs: independent or aligned windows (each side starts at its own step, or both at one step) of
1, 10 and 50 steps, and whole episodes. No SAC: minutes per env, except whole episodes of 1000
steps, which cost ~20x a 50-step window per reward step.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from ..bench.stats import mean_ci, spearman
from .data import Trajectories, label_preferences
from .reward import RewardBatch, RewardNet, reward_loss

__all__ = [
    "DESIGNS",
    "split_pool",
    "fit_preference_reward",
    "score_reward",
    "eval_windows",
    "segment_study",
    "write_markdown",
    "segments",
]

# (name, alignment, segment length); None = the longest episode's length, i.e. whole episodes.
DESIGNS = [
    ("independent 1", False, 1),
    ("aligned 1", True, 1),
    ("independent 10", False, 10),
    ("aligned 10", True, 10),
    ("independent 50 (default)", False, 50),
    ("aligned 50", True, 50),
    ("whole episodes", False, None),
]
EVAL_WINDOW = 50


def split_pool(pool: Trajectories) -> tuple[Trajectories, Trajectories]:
    """(even-numbered episodes, odd-numbered episodes): the pool holds each policy's episodes in a
    row, so both halves have every policy's."""
    return pool.episodes(range(0, pool.num_episodes, 2)), pool.episodes(range(1, pool.num_episodes, 2))


def fit_preference_reward(
    prefs, steps: int, seed: int, batch_size: int = 256, learning_rate: float = 1e-3, hidden=(64, 64), bound=10.0
) -> RewardNet:
    """A state-only :class:`RewardNet` fitted with ``steps`` Adam steps of the Bradley-Terry loss on
    ``batch_size`` pairs drawn with replacement, its inputs standardised over the pairs' valid steps."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = RewardNet(prefs.chosen_observations.shape[-1], prefs.chosen_actions.shape[-1], hidden, False, bound)
    valid = [
        getattr(prefs, f"{side}_observations")[
            np.arange(prefs.chosen_observations.shape[1])[None] < getattr(prefs, f"{side}_lengths")[:, None]
        ]
        for side in ("chosen", "rejected")
    ]
    net.set_normalization(np.concatenate(valid))
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate)
    t = torch.as_tensor
    for _ in range(steps):
        idx = rng.integers(0, len(prefs), batch_size)
        batch = RewardBatch(
            chosen_obs=t(prefs.chosen_observations[idx]),
            chosen_act=t(prefs.chosen_actions[idx]),
            chosen_len=t(prefs.chosen_lengths[idx]),
            rejected_obs=t(prefs.rejected_observations[idx]),
            rejected_act=t(prefs.rejected_actions[idx]),
            rejected_len=t(prefs.rejected_lengths[idx]),
        )
        loss, _ = reward_loss(net, batch, demo_weight=0.0, pref_weight=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net


def score_reward(step_rewards: np.ndarray, held_out: Trajectories, windows: np.ndarray) -> dict:
    """The three scores of the module docstring for per-step rewards ``(N,)`` of ``held_out``'s ``N``
    steps; ``windows`` ``(K, 2, 2)``: the ``[begin, end)`` steps of both sides of ``K`` pairs
    (:func:`eval_windows`). An undefined rank correlation (a constant reward) is None."""
    true = held_out.rewards.astype(np.float64)
    learned_returns = np.add.reduceat(step_rewards, held_out.starts)
    sums = lambda r: np.array([[r[b:e].sum() for b, e in pair] for pair in windows])
    learned, target = sums(step_rewards), sums(true)
    sign = np.sign(learned[:, 0] - learned[:, 1])
    agree = np.where(sign == 0, 0.5, sign == np.sign(target[:, 0] - target[:, 1]))  # a tie: a coin flip
    undefined_as_none = lambda rho: None if np.isnan(rho) else rho  # JSON has no NaN
    return {
        "step_spearman": undefined_as_none(spearman(step_rewards.tolist(), true.tolist())),
        "return_spearman": undefined_as_none(spearman(learned_returns.tolist(), held_out.returns().tolist())),
        "pair_accuracy": float(agree.mean()),
    }


def eval_windows(held_out: Trajectories, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, 2, 2)`` ``[begin, end)`` steps of pairs of 50-step windows (a shorter episode: all of
    it), each side in its own held-out episode, whose true window returns differ."""
    starts, lengths, out = held_out.starts, held_out.episode_lengths, []
    for _ in range(100 * count):  # bounded: a pool whose windows all tie would never fill ``out``
        if len(out) == count:
            break
        pair = []
        for e in rng.choice(held_out.num_episodes, 2, replace=False):
            n = min(EVAL_WINDOW, int(lengths[e]))
            begin = int(starts[e]) + int(rng.integers(0, lengths[e] - n + 1))
            pair.append((begin, begin + n))
        (b0, e0), (b1, e1) = pair
        if held_out.rewards[b0:e0].sum() != held_out.rewards[b1:e1].sum():
            out.append(pair)
    if len(out) < count:
        raise ValueError(f"fewer than {count} of {100 * count} drawn pairs of held-out windows differ in true return")
    return np.array(out)


def segment_study(
    pool: Trajectories,
    num_pairs: int = 100,
    steps: int = 500,
    seeds=(0, 1, 2),
    temperature_scale: float = 0.1,
    eval_pairs: int = 2000,
    progress: bool = True,
) -> dict:
    """Scores of every design in :data:`DESIGNS` (and of a constant reward) on ``pool``, per seed:
    ``{"designs": {name: {metric: [per seed]}}, "length_only": {...}, ...}``. The seed draws the
    pairs, the net's initialisation and its minibatches; the held-out pairs are fixed."""
    from tqdm.auto import tqdm

    train, held_out = split_pool(pool)
    windows = eval_windows(held_out, eval_pairs, np.random.default_rng(12345))
    longest = int(pool.episode_lengths.max())
    out: dict = {
        "num_pairs": num_pairs,
        "reward_steps": steps,
        "seeds": list(seeds),
        "temperature_scale": temperature_scale,
        "train_episodes": train.num_episodes,
        "held_out_episodes": held_out.num_episodes,
        "held_out_steps": int(held_out.episode_lengths.sum()),
        "designs": {},
    }
    constant = score_reward(np.ones(len(held_out.rewards)), held_out, windows)
    out["length_only"] = {k: [v] for k, v in constant.items()}
    bar = tqdm(total=len(DESIGNS) * len(seeds), desc="segment designs", disable=not progress)
    for name, aligned, length in DESIGNS:
        scores: dict[str, list[float]] = {}
        for seed in seeds:
            prefs, extras = label_preferences(
                train, num_pairs, length or longest, np.random.default_rng(seed), temperature_scale, 0.0, aligned
            )
            net = fit_preference_reward(prefs, steps, seed)
            with torch.no_grad():
                r = net(torch.as_tensor(held_out.observations)).numpy().astype(np.float64)
            for k, v in score_reward(r, held_out, windows).items():
                scores.setdefault(k, []).append(v)
            scores.setdefault("label_accuracy", []).append(
                float((extras["chosen_returns"] >= extras["rejected_returns"]).mean())
            )
            bar.update(1)
        out["designs"][name] = {"aligned": aligned, "segment_length": length or longest, **scores}
    bar.close()
    return out


METRICS = [
    ("step_spearman", "per-step Spearman"),
    ("return_spearman", "episode-return Spearman"),
    ("pair_accuracy", "50-step pair accuracy"),
]


def write_markdown(results: dict) -> str:
    """One table per env: each design's mean and 95 % interval over seeds, and the constant reward."""
    def cell(values: list) -> str:  # "–": undefined, None (a constant reward ranks nothing)
        if any(v is None for v in values):
            return "–"
        return "%.2f ± %.2f" % mean_ci(values) if len(values) > 1 else "%.2f" % values[0]

    lines = [
        "# Preference segment designs: what a reward learns from the pairs",
        "",
        "A state-only reward fitted on the pairs alone (preference-only RL's pretraining), scored on held-out "
        "pool episodes; mean ± 95 % interval over seeds (docs/control.md, 'Preference segments').",
    ]
    for env_id, r in results["envs"].items():
        data = r.get("data") or {}
        pool = (
            f" The pool: `{data['command']}` (demonstrator return {data['expert_return']:.0f}; pool returns by "
            f"policy {', '.join('%.0f' % v for v in data['pool_returns_by_policy'])})."
            if all(k in data for k in ("command", "expert_return", "pool_returns_by_policy"))
            else ""
        )
        lines += [
            "",
            f"## {env_id}",
            "",
            f"Command: `{r['command']}`.{pool}",
            "",
            f"{r['num_pairs']} pairs from {r['train_episodes']} pool episodes, {r['reward_steps']} reward steps, "
            f"seeds {', '.join(map(str, r['seeds']))}; scored on {r['held_out_episodes']} held-out episodes "
            f"({r['held_out_steps']} steps).",
            "",
            "| design | " + " | ".join(label for _, label in METRICS) + " | label accuracy |",
            "|---" * (len(METRICS) + 2) + "|",
        ]
        for name, d in r["designs"].items():
            scores = " | ".join(cell(d[k]) for k in [*(k for k, _ in METRICS), "label_accuracy"])
            lines.append(f"| {name} | {scores} |")
        c = r["length_only"]
        lines.append("| constant reward (length only) | " + " | ".join(cell(c[k]) for k, _ in METRICS) + " | – |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: str) -> None:
    """One panel per metric, a group of bars per env (a bar per design, the 95 % interval as an
    error bar) and the constant reward as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(results["envs"])
    names = [n for n, _, _ in DESIGNS]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), squeeze=False)
    width = 0.8 / len(names)
    for ax, (key, label) in zip(axes[0], METRICS):
        for j, name in enumerate(names):
            stats = [mean_ci([v for v in results["envs"][e]["designs"][name][key] if v is not None]) for e in envs]
            x = np.arange(len(envs)) + (j - (len(names) - 1) / 2) * width
            ax.bar(x, [m for m, _ in stats], width, yerr=[h for _, h in stats], label=name, color=f"C{j}")
        for i, e in enumerate(envs):
            level = results["envs"][e]["length_only"][key][0]
            if level is None:
                continue
            legend = "constant reward" if i == 0 else None
            ax.hlines(level, i - 0.45, i + 0.45, colors="k", linestyles="--", label=legend)
        ax.set_xticks(range(len(envs)), envs)
        ax.set_title(label)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def segments(data_root: str, envs: list[str], out_dir: str, command: str, **study_kwargs) -> dict:
    """Run :func:`segment_study` on ``<data_root>/<env>/pool.npz`` for each env and write
    ``segments.json``, ``segments.md`` and ``segments.png`` into ``out_dir`` after each env. An env
    already in ``segments.json`` from the same pool (SHA-256 of ``pool.npz``), seeds and reward steps
    is kept, not rerun, so envs can be added one command at a time. Every check (each pool, the
    existing ``segments.json``, a writable ``out_dir``) raises :class:`aihf.ConfigError` or
    :class:`aihf.DataError` before anything runs or is written."""
    import hashlib

    from ..errors import ConfigError, DataError
    from .data import load_trajectories

    paths = {e: os.path.join(data_root, e, "pool.npz") for e in envs}
    for e, path in paths.items():
        if not os.path.exists(path):
            raise ConfigError(
                f"{path}: missing (pool.npz is not committed; 'aihf control collect --preset cpu --env_id {e} "
                f"--output_dir DIR/{e}' writes one, with the flags in the committed meta.json's command): "
                "--data_root DIR"
            )
    pools = {e: load_trajectories(path) for e, path in paths.items()}
    for e, pool in pools.items():
        if pool.rewards is None:
            raise DataError(paths[e], None, "rewards", "missing; the study scores rewards against it")
        if pool.num_episodes < 4:
            raise DataError(
                paths[e],
                None,
                "episode_lengths",
                f"{pool.num_episodes} episode(s); the study needs >= 4 (half to label pairs from, half held out)",
            )
        try:  # drawn here as well as in the study: a pool whose rewards never differ fails before any fit
            eval_windows(split_pool(pool)[1], 100, np.random.default_rng(0))
        except ValueError as err:
            raise DataError(paths[e], None, "rewards", f"{err}; nothing to rank") from None
    data = {e: _collection(os.path.join(data_root, e, "meta.json")) for e in envs}
    json_path = os.path.join(out_dir, "segments.json")
    results: dict = {"envs": {}}
    if os.path.exists(json_path):
        try:
            with open(json_path) as f:
                results = json.load(f)
            if not isinstance(results, dict) or not isinstance(results.get("envs"), dict):
                raise ValueError("no 'envs' object")
        except (OSError, ValueError) as err:
            raise ConfigError(f"{json_path}: not a segments report ({err}); move it away or pick another --results")
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, ".segments_write_check"), "w"):
            pass
        os.remove(os.path.join(out_dir, ".segments_write_check"))
    except OSError as err:
        raise ConfigError(f"results={out_dir!r}: cannot write there ({err.strerror})") from None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core, as every benchmark job: more threads collapse on a shared machine
    try:
        for e, pool in pools.items():
            with open(paths[e], "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            wanted = {
                "pool_sha256": digest,
                "seeds": list(study_kwargs.get("seeds", (0, 1, 2))),
                "reward_steps": study_kwargs.get("steps", 500),
            }
            old = results["envs"].get(e, {})
            if all(old.get(k) == v for k, v in wanted.items()):
                print(f"{e}: kept from {json_path} (same pool, seeds and reward steps)", flush=True)
                continue
            study = segment_study(pool, **study_kwargs)
            results["envs"][e] = {"command": command, "data": data[e], "pool_sha256": digest, **study}
            _write(results, out_dir)
    finally:
        torch.set_num_threads(threads)
    _write(results, out_dir)  # the report and figure again, should only they have been lost
    return results


def _collection(meta_path: str) -> dict:
    """What the report says of the pool: the collection's command and returns from ``meta.json``
    beside it ({} without one)."""
    from ..errors import DataError

    if not os.path.exists(meta_path):
        return {}
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        return {k: meta[k] for k in ("expert_return", "pool_returns_by_policy", "command") if k in meta}
    except (OSError, ValueError, TypeError) as err:
        raise DataError(meta_path, None, None, f"not a collection's meta.json ({err})") from None


def _write(results: dict, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name, text in (("segments.json", json.dumps(results, indent=1)), ("segments.md", write_markdown(results))):
        with open(os.path.join(out_dir, name) + ".tmp", "w") as f:
            f.write(text)
        os.replace(os.path.join(out_dir, name) + ".tmp", os.path.join(out_dir, name))
    plot(results, os.path.join(out_dir, "segments.png"))
