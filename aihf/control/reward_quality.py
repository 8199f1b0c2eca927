"""``aihf control bench --reward_quality``: how well each finished run's learned reward orders the
preference pairs no run trained on (docs/control.md, "Learned rewards on held-out pairs").

The benchmark's runs train on the first ``N`` pairs of ``preferences.npz`` (``N`` at most the preset's
largest pair count, ``held_out_from``; a run that trained on more is refused). Each run's final reward
``r`` sums to a segment return ``R = sum_t r(s_t)`` over the segment's valid steps (method.md, "BT"),
scored on pairs ``held_out_from:`` against the *true* returns ``aihf control collect`` records
beside them (``chosen_returns``, ``rejected_returns``; the noiseless order, not the sampled labels):

* ``pair_accuracy``: the fraction of held-out pairs whose order by ``R`` is the true order (a tie in
  ``R`` counts one half; pairs whose true returns tie are left out; None if all do);
* ``return_spearman``: Spearman's rank correlation of ``R`` and the true return over every held-out
  segment (None where undefined: a constant ``R``);
* the same two for the reward *as SAC saw it* at the end of the run, ``r + offset`` (``offset``:
  ``-min r`` with the survival bonus, else ``-mean r``, over the final replay buffer's evenly spaced
  states, as the trainer normalises; dividing by the std leaves every order as it is). On an env whose
  segments are cut short by falls, the shift changes the order: it pays each step alive;
* ``disjoint_pair_accuracy``: ``pair_accuracy`` over the held-out pairs neither of whose segments
  shares a step (an identical observation) with a training pair. Pairs are cut from the same pool
  episodes, so many held-out segments overlap training ones (``overlap`` says how many): for the
  methods that fit pairs the full score is partly a fit, not only generalisation; ML-IRL never sees
  pairs.

References per env: ``length only`` (a constant reward, so ``R`` is the segment's length) and
``labels`` (the sampled labels' own agreement with the true order; not a ceiling: a reward fitted to
many noisy labels can order pairs better than any one label).

The reward is read from the run folder (``<work>/<env>/<run>``): ``reward.safetensors`` with the
config in ``result.json``, or else the last checkpoint (``checkpoint/state.pt``, read with
``torch.load(weights_only=True)``) of a finished run; the shift needs ``checkpoint/buffer.npz``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from ..bench.stats import spearman
from ..errors import ConfigError
from .config import parse_sizes
from .data import Preferences, load_preference_returns, load_preferences
from .reward import RewardNet, env_actions, segment_returns

__all__ = [
    "SCORED_METHODS",
    "ScoredRun",
    "load_run_reward",
    "sac_offset",
    "score_pairs",
    "reward_quality",
    "write_markdown",
]

# Methods whose run holds a reward net that shapes SAC; null_untrained's is the net as initialised, the
# reference a trained one must beat. null_constant, true_reward and bc have none that SAC sees.
SCORED_METHODS = ("aihf", "ml_irl", "pref_rl", "two_stage", "null_untrained")
SCORES = ("pair_accuracy", "return_spearman", "sac_pair_accuracy", "sac_return_spearman", "disjoint_pair_accuracy")
OVERLAP = ("held_out_segments_sharing_a_step_with_training", "disjoint_pairs")


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


def _reason(error: Exception) -> str:
    """The line of an exception's message that says what is wrong (torch puts it after a heading)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def _read_run(run_dir: str) -> tuple[dict, str]:
    """The finished run's config and the path of its reward weights."""
    weights = os.path.join(run_dir, "reward.safetensors")
    if os.path.exists(weights):
        source = os.path.join(run_dir, "result.json")
        if not os.path.exists(source):
            raise ConfigError(f"{weights}: no result.json beside it to read the run's reward settings from")
    else:  # runs written before reward.safetensors existed: the last checkpoint of a finished run
        source = os.path.join(run_dir, "checkpoint", "meta.json")
        weights = os.path.join(run_dir, "checkpoint", "state.pt")
        if not os.path.exists(source):
            raise ConfigError(f"{run_dir}: no reward.safetensors and no checkpoint to read the reward from")
    try:
        with open(source) as f:
            meta = json.load(f)
        config = meta["config"]
        if not isinstance(config, dict):
            raise TypeError("'config' is not an object")
        if source.endswith("meta.json"):
            done, total = meta["round"], config["rounds"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (done, total)):
                raise TypeError(f"'round' and 'rounds' must be integers, got {done!r} and {total!r}")
            if done != total:
                raise ValueError(f"its checkpoint is of round {done} of {total}: not finished")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{source}: cannot read the run's reward settings ({e})") from None
    return config, weights


def _build(config: dict, source: str, obs_dim: int, act_dim: int) -> RewardNet:
    try:
        if config["reward_input"] not in ("state", "state_action"):
            raise ValueError(f"reward_input must be 'state' or 'state_action', got {config['reward_input']!r}")
        hidden = tuple(parse_sizes(config["reward_net_arch"]))
        bound = float(config["reward_bound"])
        if not np.isfinite(bound) or bound <= 0:
            raise ValueError(f"reward_bound must be a finite number > 0, got {config['reward_bound']!r}")
        return RewardNet(obs_dim, act_dim, hidden, config["reward_input"] == "state_action", bound)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{source}: cannot read the run's reward settings ({e})") from None


def _load_weights(net: RewardNet, weights: str) -> None:
    try:
        if weights.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(weights)
        else:
            with warnings.catch_warnings():  # torch warns about what weights_only refuses; the refusal says it
                warnings.simplefilter("ignore")
                state = torch.load(weights, weights_only=True)["reward"]
    except Exception as e:  # weights_only refuses pickles; truncated files and a missing key land here too
        if "weights_only" in str(e):
            raise ConfigError(f"{weights}: refused to load (it holds pickled objects, which are never unpickled)")
        raise ConfigError(f"{weights}: cannot load the reward ({_reason(e)})") from None
    try:
        net.load_state_dict(state)
    except Exception as e:  # wrong sizes, missing or extra keys
        raise ConfigError(f"{weights}: not a reward of the run's settings for this data ({_reason(e)})") from None


def load_run_reward(run_dir: str, obs_dim: int, act_dim: int) -> RewardNet:
    """The final reward net of the finished run in ``run_dir`` for observations of ``obs_dim`` and
    actions of ``act_dim`` features, in eval mode. Raises :class:`aihf.ConfigError` (one line naming
    the file) for a folder without a readable reward or one that does not fit the run's
    ``reward_net_arch`` / ``reward_input`` / ``reward_bound`` or these sizes."""
    config, weights = _read_run(run_dir)
    net = _build(config, weights, obs_dim, act_dim)
    _load_weights(net, weights)
    return net.eval()


def sac_offset(run_dir: str, net: RewardNet, config: dict) -> float | None:
    """What the trainer added to ``r`` before SAC saw it at the end of the run: ``-min r`` (survival
    bonus) or ``-mean r`` over ``normalization_samples`` evenly spaced states of the final replay buffer
    (``checkpoint/buffer.npz``), or the fixed shift without normalisation. None without a buffer;
    :class:`aihf.ConfigError` for settings or a buffer that cannot give a finite shift."""
    survival, normalization = config.get("survival_bonus", True), config.get("sac_reward_normalization", "buffer")
    samples = config.get("normalization_samples", 10_000)
    if not isinstance(survival, bool) or normalization not in ("buffer", "none"):
        raise ConfigError(
            f"{run_dir}: survival_bonus must be true or false and sac_reward_normalization 'buffer' or 'none', got "
            f"{survival!r} and {normalization!r}"
        )
    if normalization == "none":
        return net.bound if survival else 0.0
    path = os.path.join(run_dir, "checkpoint", "buffer.npz")
    if not os.path.exists(path):
        return None
    try:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise ValueError(f"normalization_samples must be an integer >= 1, got {samples!r}")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not a .npz file")
        with loaded as buffer:
            observations, actions = buffer["observations"], buffer["actions"]
        if len(observations) == 0 or observations.ndim != 3 or actions.ndim != 3:
            raise ValueError(f"expected (size >= 1, n_envs, dim) arrays, got {observations.shape} and {actions.shape}")
        idx = np.linspace(0, len(observations) - 1, min(len(observations), samples)).astype(np.int64)
        obs = torch.as_tensor(observations[idx, 0], dtype=torch.float32)
        act = None
        if net.use_actions:
            from .envs import make_env

            space = make_env(config["env_id"]).action_space
            low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
            act = env_actions(torch.as_tensor(actions[idx, 0], dtype=torch.float32), low, high)
        with torch.no_grad():
            r = net(obs, act)
        offset = -(r.min().item() if survival else r.mean().item())
        if not math.isfinite(offset):
            raise ValueError("the reward over it is not finite")
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path}: cannot give the final shift of SAC's reward ({_reason(e)})") from None
    return offset


def score_pairs(chosen: np.ndarray, rejected: np.ndarray, true_chosen: np.ndarray, true_rejected: np.ndarray) -> dict:
    """``pair_accuracy`` and ``return_spearman`` (module docstring) from segment returns ``(K,)`` of
    both sides (learned) and their true returns ``(K,)``; either is None where undefined."""
    keep = true_chosen != true_rejected
    with np.errstate(over="ignore", invalid="ignore"):  # +-1e308 differences overflow to +-inf: the sign holds
        learned_sign = np.sign(chosen - rejected)[keep]
        true_sign = np.sign(true_chosen - true_rejected)[keep]
    accuracy = float(np.where(learned_sign == 0, 0.5, learned_sign == true_sign).mean()) if keep.any() else None
    rho = spearman(np.concatenate([chosen, rejected]).tolist(), np.concatenate([true_chosen, true_rejected]).tolist())
    return {"pair_accuracy": accuracy, "return_spearman": None if np.isnan(rho) else float(rho)}


def _valid_rows(prefs: Preferences, side: str) -> list[set[bytes]]:
    """Per pair, the set of its ``side`` segment's valid observation rows (as bytes)."""
    obs, lengths = getattr(prefs, f"{side}_observations"), getattr(prefs, f"{side}_lengths")
    return [{row.tobytes() for row in obs[p, : lengths[p]]} for p in range(len(prefs))]


def _shared_steps(train: Preferences, held: Preferences) -> tuple[np.ndarray, np.ndarray]:
    """``(K,)`` bool per side (chosen, rejected): the held-out segment shares a step (an identical
    observation) with a training segment."""
    seen = set().union(*_valid_rows(train, "chosen"), *_valid_rows(train, "rejected"))
    chosen, rejected = ([bool(rows & seen) for rows in _valid_rows(held, side)] for side in ("chosen", "rejected"))
    return np.array(chosen, bool), np.array(rejected, bool)


def _segment_returns(net: RewardNet, prefs: Preferences, side: str, offset: float = 0.0) -> np.ndarray:
    t = torch.as_tensor
    obs, act = t(getattr(prefs, f"{side}_observations")), t(getattr(prefs, f"{side}_actions"))
    with torch.no_grad():
        rewards = net(obs, act if net.use_actions else None).double() + offset
        return segment_returns(rewards, t(getattr(prefs, f"{side}_lengths"))).numpy()


def _score_run(net: RewardNet, offset: float | None, held: Preferences, true, disjoint, weights: str) -> dict:
    learned = _segment_returns(net, held, "chosen"), _segment_returns(net, held, "rejected")
    if not all(np.isfinite(x).all() for x in learned):
        raise ConfigError(f"{weights}: the reward is not finite on the held-out segments")
    scores = score_pairs(*learned, *true)
    if offset is None:
        scores |= {"sac_pair_accuracy": None, "sac_return_spearman": None}
    else:
        shifted = score_pairs(*(_segment_returns(net, held, s, offset) for s in ("chosen", "rejected")), *true)
        scores |= {"sac_pair_accuracy": shifted["pair_accuracy"], "sac_return_spearman": shifted["return_spearman"]}
    subset = score_pairs(learned[0][disjoint], learned[1][disjoint], true[0][disjoint], true[1][disjoint])
    return scores | {"sac_offset": offset, "disjoint_pair_accuracy": subset["pair_accuracy"]}


def _number_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def _check_report(report) -> None:
    """Raise ValueError unless ``report`` has every field :func:`write_markdown` reads, of its type."""
    if not isinstance(report, dict) or not isinstance(report.get("envs"), dict):
        raise ValueError("no 'envs' object")
    if isinstance(report.get("held_out_from"), bool) or not isinstance(report.get("held_out_from"), int):
        raise ValueError("no integer 'held_out_from'")
    for env_id, env in report["envs"].items():
        if not isinstance(env, dict) or not isinstance(env.get("runs"), dict):
            raise ValueError(f"{env_id}: no 'runs' object")
        overlap, refs = env.get("overlap"), env.get("references")
        if not isinstance(env.get("held_out_pairs"), int) or not isinstance(env.get("preferences_sha256"), str):
            raise ValueError(f"{env_id}: no 'held_out_pairs' or 'preferences_sha256'")
        if not isinstance(overlap, dict) or not all(_number_or_none(overlap.get(k)) for k in OVERLAP):
            raise ValueError(f"{env_id}: no numeric 'overlap'")
        if not isinstance(refs, dict) or not all(
            isinstance(r, dict) and all(_number_or_none(r.get(k)) for k in SCORES[:2]) for r in refs.values()
        ):
            raise ValueError(f"{env_id}: 'references' without their scores")
        for name, row in env["runs"].items():
            labels = ("setting", "method", "command")
            if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in labels):
                raise ValueError(f"{env_id}/{name}: no setting, method or command")
            if not all(_number_or_none(row.get(k)) for k in (*SCORES, "sac_offset")):
                raise ValueError(f"{env_id}/{name}: a score that is not a finite number or null")


def _old_report(json_path: str) -> dict:
    """An earlier report at ``json_path`` ({} if none), its structure checked."""
    if not os.path.exists(json_path):
        return {}
    try:
        with open(json_path) as f:
            old = json.load(f, parse_constant=lambda c: float("nan"))  # NaN / Infinity: refused below
        _check_report(old)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{json_path}: not a reward-quality report ({e}); move it away or pick another --results")
    return old


def _check_run_config(run: ScoredRun, config: dict, held_out_from: int) -> None:
    """Refuse a run of another env, or one whose pairs include held-out ones or come from another file."""
    if config.get("env_id") != run.env_id:
        raise ConfigError(f"{run.run_dir}: a run of {config.get('env_id')!r}, not of {run.env_id}")
    if run.method not in ("aihf", "pref_rl", "two_stage"):
        return
    trained_on, source = config.get("num_preferences", "missing"), config.get("preferences")
    if isinstance(trained_on, bool) or not isinstance(trained_on, int) or trained_on > held_out_from:
        what = "all" if trained_on is None else trained_on
        raise ConfigError(
            f"{run.run_dir}: trained on the first {what} pairs, but only pairs from index {held_out_from} on are "
            "held out (--train_flags --num_preferences?)"
        )
    if not isinstance(source, str) or tuple(os.path.normpath(source).split(os.sep)[-2:]) != (
        run.env_id,
        "preferences.npz",
    ):
        raise ConfigError(f"{run.run_dir}: trained on the pairs of {source!r}, not on {run.env_id}/preferences.npz")


def reward_quality(runs: list[ScoredRun], data_root: str, held_out_from: int, out_dir: str, command: str) -> dict:
    """Score every finished run of ``runs`` (its ``result_file`` exists) whose method is in
    :data:`SCORED_METHODS` on ``<data_root>/<env>/preferences.npz``'s pairs ``held_out_from:``, and
    write ``reward_quality.json`` and ``.md`` to ``out_dir``, keeping the rows of an earlier report that
    this call does not rescore (same preference file, by SHA-256); a run whose folder is gone keeps its
    row. Raises :class:`aihf.ConfigError` / :class:`aihf.DataError` before anything is written. Returns
    the report with ``scored``, ``missing`` (finished runs with neither a folder nor a kept row) and
    ``dropped`` (rows of an earlier report whose preference file has changed)."""
    finished = [r for r in runs if os.path.exists(r.result_file)]
    if not finished:
        envs = ", ".join(sorted({r.env_id for r in runs})) or "none"
        raise ConfigError(
            f"results={out_dir!r}: no finished run's result file under run_results/ among the selected runs (envs: "
            f"{envs})"
        )
    finished = [r for r in finished if r.method in SCORED_METHODS]
    if not finished:
        raise ConfigError(f"none of the selected finished runs has a learned reward ({', '.join(SCORED_METHODS)})")
    try:
        os.makedirs(os.path.join(out_dir, "locks"), exist_ok=True)  # where the sweep's run locks live (ignored by git)
        lock = open(os.path.join(out_dir, "locks", "reward_quality.lock"), "w")
    except OSError as e:
        raise ConfigError(f"results={out_dir!r}: cannot write there ({e.strerror})") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another call on the same folder reads the report after this one wrote it
        return _update(finished, data_root, held_out_from, out_dir, command)


def _update(finished: list[ScoredRun], data_root: str, held_out_from: int, out_dir: str, command: str) -> dict:
    from .envs import make_env

    json_path = os.path.join(out_dir, "reward_quality.json")
    old = _old_report(json_path)
    if old and old["held_out_from"] != held_out_from:
        raise ConfigError(
            f"{json_path}: written for pairs from index {old['held_out_from']} on, this preset holds out from "
            f"{held_out_from}; pick another --results"
        )
    report = {"held_out_from": held_out_from, "envs": dict(old.get("envs", {}))}
    scored = missing = dropped = 0
    for env_id in sorted({r.env_id for r in finished}):
        path = os.path.join(data_root, env_id, "preferences.npz")
        env = make_env(env_id)
        prefs = load_preferences(path, env.observation_space, env.action_space)
        true_all = load_preference_returns(path, len(prefs))
        if len(prefs) <= held_out_from:
            raise ConfigError(f"{path}: {len(prefs)} pairs; the runs train on up to the first {held_out_from}")
        held = Preferences(*(getattr(prefs, k)[held_out_from:] for k in Preferences.__dataclass_fields__))
        true = true_all[0][held_out_from:], true_all[1][held_out_from:]
        shared = _shared_steps(prefs.subset(held_out_from), held)
        disjoint = ~shared[0] & ~shared[1]
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        previous = report["envs"].get(env_id, {})
        kept = previous.get("runs", {}) if previous.get("preferences_sha256") == digest else {}
        dropped += len(previous.get("runs", {})) - len(kept)
        lengths = [held.chosen_lengths.astype(np.float64), held.rejected_lengths.astype(np.float64)]
        ones = np.ones(len(true[0]))
        env_report = {
            "preferences": path,
            "preferences_sha256": digest,
            "held_out_pairs": len(true[0]),
            "overlap": {
                "held_out_segments_sharing_a_step_with_training": float(np.concatenate(shared).mean()),
                "disjoint_pairs": int(disjoint.sum()),
            },
            "references": {
                "length only": score_pairs(*lengths, *true),
                # The first side is the labelled winner: its agreement with the true order is the labels'.
                "labels": {**score_pairs(ones, 0 * ones, *true), "return_spearman": None},
            },
            "runs": dict(kept),
        }
        obs_dim, act_dim = held.chosen_observations.shape[-1], held.chosen_actions.shape[-1]
        for run in sorted((r for r in finished if r.env_id == env_id), key=lambda r: r.name):
            if os.path.exists(run.run_dir) and not os.path.isdir(run.run_dir):
                raise ConfigError(f"{run.run_dir}: not a run folder")
            if not os.path.isdir(run.run_dir):
                missing += run.name not in kept
                continue
            config, weights = _read_run(run.run_dir)
            _check_run_config(run, config, held_out_from)
            net = _build(config, weights, obs_dim, act_dim)
            _load_weights(net, weights)
            scores = _score_run(net.eval(), sac_offset(run.run_dir, net, config), held, true, disjoint, weights)
            row = {"setting": run.setting, "method": run.method, "seed": run.seed, **scores, "command": command}
            env_report["runs"][run.name] = row
            scored += 1
        report["envs"][env_id] = env_report
    if scored == 0 and missing:
        raise ConfigError(
            f"none of the {missing} finished runs to score has its folder under --work (a typo?), nor a row in "
            f"{json_path}"
        )
    _write(report, out_dir)
    return {**report, "scored": scored, "missing": missing, "dropped": dropped}


def _write(report: dict, out_dir: str) -> None:
    """Both files or neither: each is written beside its name first, then the markdown and last the JSON
    are moved in place; a failure puts the markdown back as it was."""
    texts = {"reward_quality.md": write_markdown(report), "reward_quality.json": json.dumps(report, indent=1)}
    paths = {name: os.path.join(out_dir, name) for name in texts}
    before = None
    try:
        if os.path.isfile(paths["reward_quality.md"]):
            with open(paths["reward_quality.md"]) as f:
                before = f.read()
        for name, text in texts.items():
            with open(paths[name] + ".tmp", "w") as f:
                f.write(text)
        os.replace(paths["reward_quality.md"] + ".tmp", paths["reward_quality.md"])
        try:
            os.replace(paths["reward_quality.json"] + ".tmp", paths["reward_quality.json"])
        except OSError:
            if before is None:
                os.remove(paths["reward_quality.md"])
            else:
                with open(paths["reward_quality.md"], "w") as f:
                    f.write(before)
            raise
    except OSError as e:
        for path in paths.values():
            if os.path.isfile(path + ".tmp"):
                os.remove(path + ".tmp")
        where = (e.filename or out_dir).removesuffix(".tmp")
        raise ConfigError(f"{where}: cannot write the report ({e.strerror})") from None


def _cell(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{np.mean(values):.2f} ± {np.std(values):.2f} ({len(values)})"


def write_markdown(report: dict) -> str:
    """The report as markdown: per env, one row per setting and method (mean ± std over seeds, and
    their number), the two references, and the commands that scored the rows."""
    lines = [
        "# Learned rewards on held-out preference pairs",
        "",
        f"Each finished run's final reward, summed over a segment, on the pairs from index {report['held_out_from']} "
        "of `preferences.npz` (no run trained on them), against the true segment returns. `accuracy`: the fraction "
        "of pairs it orders as the true return does; `ρ`: Spearman's rank correlation with the true return over "
        "the held-out segments; `as SAC saw it`: the same for the reward plus the shift the trainer added at the "
        "end (the survival bonus: every step alive earns); `disjoint`: accuracy on the held-out pairs that share "
        "no step with a training pair (held-out pairs come from the same pool episodes as the training pairs, so "
        "for methods that fit pairs the other columns are partly a fit). Mean ± std over seeds (number of seeds). "
        "References: `length only`, a constant reward (a segment cut short by a fall sums to less); `labels`, the "
        "sampled labels' own agreement with the true order (not a ceiling). `null_untrained` is the reward net as "
        "initialised. docs/control.md, \"Learned rewards on held-out pairs\".",
    ]
    for env_id, env in sorted(report["envs"].items()):
        overlap = env.get("overlap", {})
        lines += [
            "",
            f"## {env_id}",
            "",
            f"{env['held_out_pairs']} held-out pairs; "
            f"{overlap.get('held_out_segments_sharing_a_step_with_training', float('nan')):.0%} of their segments "
            f"share a step with a training segment; {overlap.get('disjoint_pairs', '?')} pairs share none.",
            "",
            "| setting | method | accuracy | ρ | accuracy, as SAC saw it | ρ, as SAC saw it | accuracy, disjoint |",
            "|---|---|---|---|---|---|---|",
        ]
        groups: dict[tuple[str, str], list[dict]] = {}
        for row in env["runs"].values():
            groups.setdefault((row["setting"], row["method"]), []).append(row)
        for (setting, method), rows in sorted(groups.items()):
            cells = " | ".join(_cell([r.get(k) for r in rows]) for k in SCORES)
            lines.append(f"| {setting} | {method} | {cells} |")
        for name, ref in env["references"].items():
            acc = "–" if ref["pair_accuracy"] is None else f"{ref['pair_accuracy']:.2f}"
            rho = "–" if ref["return_spearman"] is None else f"{ref['return_spearman']:.2f}"
            lines.append(f"| reference | {name} | {acc} | {rho} | | | |")
    commands = sorted({row.get("command", "") for env in report["envs"].values() for row in env["runs"].values()})
    lines += ["", "Scored by: " + "; ".join(f"`{c}`" for c in commands if c)]
    return "\n".join(lines) + "\n"
