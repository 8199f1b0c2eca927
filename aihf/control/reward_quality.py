"""``aihf control bench --reward_quality``: how well each finished run's learned reward ranks preference
pairs it never saw (docs/control.md, "Learned rewards on held-out pairs").

The benchmark's runs train on the first ``N`` pairs of ``preferences.npz`` (``N`` at most the preset's
largest pair count, ``held_out_from``); the pairs after those are held out from every run. Each
run's final reward ``r`` sums to a segment return ``R = sum_t r(s_t)`` (method.md, "BT"), and is scored
on the held-out pairs against the *true* returns ``aihf control collect`` records beside them
(``chosen_returns``, ``rejected_returns``; the noiseless order, not the labeller's sampled labels):

* ``pair_accuracy``: the fraction of held-out pairs whose order by ``R`` is the true order (a tie in
  ``R`` counts one half; pairs whose true returns tie are left out);
* ``return_spearman``: Spearman's rank correlation of ``R`` and the true return over every held-out
  segment.

This separates the reward a method learned from what SAC made of it at the run's budget: where no
policy reaches the demonstrator (Hopper-v5 within 300k steps, "Results"), it still ranks the rewards.
Two references per env: ``length only`` (a constant reward, so ``R`` is the segment's length: on an env
whose episodes end early a segment cut by a fall is shorter) and ``labels`` (the labeller's sampled
labels against the true order: the accuracy its noise allows a reward fitted to them).

The reward is read from the run folder (``<work>/<env>/<run>``): ``reward.safetensors`` with the
config in ``result.json``, or else the last checkpoint (``checkpoint/state.pt``, loaded with
``torch.load(weights_only=True)``) of a finished run.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..bench.stats import spearman
from ..errors import ConfigError, DataError
from .config import parse_sizes
from .reward import RewardNet, segment_returns

__all__ = ["SCORED_METHODS", "ScoredRun", "load_run_reward", "score_pairs", "reward_quality", "write_markdown"]

# Methods whose run holds a reward net that shapes SAC; null_untrained's is the net as initialised, the
# reference a trained one must beat. null_constant, true_reward and bc leave theirs unused.
SCORED_METHODS = ("aihf", "ml_irl", "pref_rl", "two_stage", "null_untrained")


@dataclass(frozen=True)
class ScoredRun:
    """One benchmark run to score: where its reward and its result file are."""

    env_id: str
    name: str  # <setting>__<method>__seed<N>
    setting: str
    method: str
    seed: int
    run_dir: str
    result_file: str


def load_run_reward(run_dir: str, obs_dim: int, act_dim: int) -> RewardNet:
    """The final reward net of the finished run in ``run_dir``. Raises :class:`aihf.ConfigError`
    (one line naming the file) for a folder without a readable reward, or one that does not fit the
    run's ``reward_net_arch`` / ``reward_input`` / ``reward_bound`` or these dimensions."""
    weights_path = os.path.join(run_dir, "reward.safetensors")
    if os.path.exists(weights_path):
        config_path = os.path.join(run_dir, "result.json")
    else:  # runs written before reward.safetensors existed: the last checkpoint of a finished run
        config_path = os.path.join(run_dir, "checkpoint", "meta.json")
        weights_path = os.path.join(run_dir, "checkpoint", "state.pt")
    try:
        with open(config_path) as f:
            meta = json.load(f)
        config = meta["config"]
        if config_path.endswith("meta.json") and meta["round"] != config["rounds"]:
            raise ValueError(f"its checkpoint is of round {meta['round']} of {config['rounds']}: not finished")
        hidden = tuple(parse_sizes(config["reward_net_arch"]))
        net = RewardNet(obs_dim, act_dim, hidden, config["reward_input"] == "state_action", config["reward_bound"])
    except FileNotFoundError:
        raise ConfigError(f"{run_dir}: no reward.safetensors and no checkpoint to read the reward from") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{config_path}: cannot read the run's reward settings ({e})") from None
    try:
        if weights_path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights_path)
        else:
            state = torch.load(weights_path, weights_only=True)["reward"]
        net.load_state_dict(state)
    except Exception as e:  # weights_only refuses pickles; a wrong shape or a missing key lands here too
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{weights_path}: cannot load the reward ({first})") from None
    return net.eval()


def _held_out_pairs(path: str, held_out_from: int) -> dict[str, np.ndarray]:
    """The arrays of pairs ``held_out_from:`` of ``path`` with their true returns; DataError without."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise DataError(path, None, None, f"cannot read ({e})") from None
    for key in ("chosen_returns", "rejected_returns", "chosen_observations", "rejected_observations"):
        if key not in arrays:
            raise DataError(path, None, key, "missing: the held-out score needs what `aihf control collect` writes")
    total = len(arrays["chosen_returns"])
    if total <= held_out_from:
        why = f"{total} pairs; the runs train on up to the first {held_out_from}: none held out"
        raise DataError(path, None, "chosen_returns", why)
    out = {k: v[held_out_from:] for k, v in arrays.items() if v.ndim >= 1 and len(v) == total}
    for side in ("chosen", "rejected"):
        if f"{side}_lengths" not in out:
            out[f"{side}_lengths"] = np.full(len(out["chosen_returns"]), arrays[f"{side}_observations"].shape[1])
    return out


def score_pairs(chosen: np.ndarray, rejected: np.ndarray, true_chosen: np.ndarray, true_rejected: np.ndarray) -> dict:
    """The scores of the module docstring from segment returns ``(K,)`` of both sides (learned) and
    their true returns ``(K,)``. ``return_spearman`` is None where undefined (a constant ``R``)."""
    keep = true_chosen != true_rejected
    learned_sign = np.sign(chosen - rejected)[keep]
    true_sign = np.sign(true_chosen - true_rejected)[keep]
    accuracy = np.where(learned_sign == 0, 0.5, learned_sign == true_sign).mean() if keep.any() else float("nan")
    rho = spearman(np.concatenate([chosen, rejected]).tolist(), np.concatenate([true_chosen, true_rejected]).tolist())
    return {"pair_accuracy": float(accuracy), "return_spearman": None if np.isnan(rho) else float(rho)}


def _segment_returns(net: RewardNet, pairs: dict, side: str) -> np.ndarray:
    t = torch.as_tensor
    obs, act = t(pairs[f"{side}_observations"], dtype=torch.float32), t(pairs[f"{side}_actions"], dtype=torch.float32)
    with torch.no_grad():
        return segment_returns(net(obs, act if net.use_actions else None), t(pairs[f"{side}_lengths"])).double().numpy()


def reward_quality(runs: list[ScoredRun], data_root: str, held_out_from: int, out_dir: str, command: str) -> dict:
    """Score every finished run of ``runs`` (its ``result_file`` exists) whose method is in
    :data:`SCORED_METHODS` on ``<data_root>/<env>/preferences.npz``'s pairs ``held_out_from:``, and
    write ``reward_quality.json`` and ``.md`` to ``out_dir``. A run whose folder is gone keeps its row
    from an earlier report of the same preference file (matched by SHA-256). Returns the report."""
    json_path = os.path.join(out_dir, "reward_quality.json")
    old: dict = {}
    if os.path.exists(json_path):
        try:
            with open(json_path) as f:
                old = json.load(f)["envs"]
            if not isinstance(old, dict):
                raise ValueError("'envs' is not an object")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{json_path}: not a reward-quality report ({e}); move it away or pick another --results")
    report: dict = {"command": command, "held_out_from": held_out_from, "envs": {}}
    scored = missing = 0
    for env_id in sorted({r.env_id for r in runs}):
        path = os.path.join(data_root, env_id, "preferences.npz")
        pairs = _held_out_pairs(path, held_out_from)
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        kept = old.get(env_id, {}).get("runs", {}) if old.get(env_id, {}).get("preferences_sha256") == digest else {}
        true = pairs["chosen_returns"].astype(np.float64), pairs["rejected_returns"].astype(np.float64)
        env_report = {
            "preferences": path,
            "preferences_sha256": digest,
            "held_out_pairs": len(true[0]),
            "references": {
                "length only": score_pairs(
                    pairs["chosen_lengths"].astype(np.float64), pairs["rejected_lengths"].astype(np.float64), *true
                ),
                # The labels say "chosen" first: their agreement with the true order is that of the first side.
                "labels": score_pairs(np.ones(len(true[0])), np.zeros(len(true[0])), *true)
                | {"return_spearman": None},
            },
            "runs": {},
        }
        obs_dim, act_dim = pairs["chosen_observations"].shape[-1], pairs["chosen_actions"].shape[-1]
        for run in sorted((r for r in runs if r.env_id == env_id), key=lambda r: r.name):
            if run.method not in SCORED_METHODS or not os.path.exists(run.result_file):
                continue
            if not os.path.isdir(run.run_dir):
                if run.name in kept:
                    env_report["runs"][run.name] = kept[run.name]
                else:
                    missing += 1
                continue
            net = load_run_reward(run.run_dir, obs_dim, act_dim)
            learned = _segment_returns(net, pairs, "chosen"), _segment_returns(net, pairs, "rejected")
            scores = score_pairs(*learned, *true)
            env_report["runs"][run.name] = {"setting": run.setting, "method": run.method, "seed": run.seed, **scores}
            scored += 1
        report["envs"][env_id] = env_report
    os.makedirs(out_dir, exist_ok=True)
    texts = {"reward_quality.json": json.dumps(report, indent=1), "reward_quality.md": write_markdown(report)}
    for name, text in texts.items():
        with open(os.path.join(out_dir, name) + ".tmp", "w") as f:
            f.write(text)
        os.replace(os.path.join(out_dir, name) + ".tmp", os.path.join(out_dir, name))
    report["scored"], report["missing"] = scored, missing
    return report


def _cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{np.mean(values):.2f} ± {np.std(values):.2f} ({len(values)})"


def write_markdown(report: dict) -> str:
    """The report as markdown: per env, one row per setting and method (mean ± std over seeds, and
    their number) and the two references."""
    lines = [
        "# Learned rewards on held-out preference pairs",
        "",
        f"Each finished run's final reward, summed over a segment, on the pairs from index {report['held_out_from']} "
        "of `preferences.npz` (held out from every run), against the true segment returns: `accuracy`, the "
        "fraction of pairs it orders as the true return does; `ρ`, Spearman's rank correlation with the true "
        "return over the held-out segments. Mean ± std over seeds (number of seeds). References: `length "
        "only`, a constant reward (a segment cut short by a fall sums to less); `labels`, the labeller's sampled "
        "labels (the accuracy its noise leaves). `null_untrained` is the reward net as initialised. "
        "docs/control.md, \"Learned rewards on held-out pairs\".",
        "",
        f"Command: `{report['command']}`",
    ]
    for env_id, env in report["envs"].items():
        lines += ["", f"## {env_id}", "", f"{env['held_out_pairs']} held-out pairs.", ""]
        lines += ["| setting | method | accuracy | ρ |", "|---|---|---|---|"]
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in env["runs"].values():
            groups.setdefault((row["setting"], row["method"]), []).append(row)
        for (setting, method), rows in sorted(groups.items()):
            acc, rho = _cell([r["pair_accuracy"] for r in rows]), _cell([r["return_spearman"] for r in rows])
            lines.append(f"| {setting} | {method} | {acc} | {rho} |")
        for name, ref in env["references"].items():
            rho = "–" if ref["return_spearman"] is None else f"{ref['return_spearman']:.2f}"
            lines.append(f"| reference | {name} | {ref['pair_accuracy']:.2f} | {rho} |")
    return "\n".join(lines) + "\n"
