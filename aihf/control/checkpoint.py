"""The AIHF loop's checkpoints (``output_dir/checkpoint``), written atomically after every round
and free of pickles: tensors and optimiser states in ``state.pt`` (read back with
``torch.load(weights_only=True)``; with ``sac_backend="sbx"`` SAC's JAX arrays in ``sac.npz``,
``allow_pickle=False``), SAC's replay buffer as ``buffer.npz`` (``allow_pickle=False``),
and counters, every RNG state the run draws from and the run's configuration in ``meta.json``.

A save writes ``checkpoint.tmp``, moves the last checkpoint to ``checkpoint.old``, moves the new one
in place and removes the old one; :func:`recover_checkpoint` undoes a kill between the two moves.
A run resumes only from its own ``output_dir`` and only when its settings match
(:func:`refuse_other_settings`; the :data:`RESUMABLE` ones may change).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil

import numpy as np
import torch

from ..errors import ConfigError
from .config import METHOD_IGNORES, ControlConfig

__all__ = [
    "BUFFER_ARRAYS",
    "RESUMABLE",
    "save_checkpoint",
    "read_checkpoint_meta",
    "restore_checkpoint",
    "recover_checkpoint",
    "refuse_other_settings",
    "check_previous_run",
]

BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
# Settings that may change between a run and its resumption.
RESUMABLE = frozenset(
    {
        "rounds",
        "resume",
        "progress",
        "torch_threads",
        "eval_every",
        "eval_episodes",
        "output_dir",
        "result_file",
        "skip_nonfinite_steps",
        "final_eval_episodes",
    }
)


def save_checkpoint(path: str, model, reward_net, reward_optimizer, rng: np.random.Generator, round_: int, state: dict):
    """Write SAC ``model`` (weights, optimisers, entropy coefficient, replay buffer, counters), the
    reward net and its optimiser, the RNG states (torch's, NumPy's global, Python's, ``rng``) and the
    JSON-able ``state`` (history, timing, config, ...) as the checkpoint of round ``round_`` at ``path``."""
    buf = model.replay_buffer
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    tensors = {
        "reward": reward_net.state_dict(),
        "reward_optimizer": reward_optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    if _is_sbx(model):  # JAX arrays, not torch modules
        from .sbx_backend import sac_arrays

        np.savez(os.path.join(tmp, "sac.npz"), **sac_arrays(model))
    else:
        tensors["policy"] = model.policy.state_dict()
        tensors["actor_optimizer"] = model.actor.optimizer.state_dict()
        tensors["critic_optimizer"] = model.critic.optimizer.state_dict()
    if not _is_sbx(model) and model.ent_coef_optimizer is not None:
        tensors["log_ent_coef"] = model.log_ent_coef.detach().clone()
        tensors["ent_coef_optimizer"] = model.ent_coef_optimizer.state_dict()
    torch.save(tensors, os.path.join(tmp, "state.pt"))
    size = buf.buffer_size if buf.full else buf.pos
    np.savez(os.path.join(tmp, "buffer.npz"), **{k: getattr(buf, k)[:size] for k in BUFFER_ARRAYS})
    np_state = np.random.get_state()
    meta = {
        "round": round_,
        "num_timesteps": int(model.num_timesteps),
        "n_updates": int(model._n_updates),
        "buffer_pos": int(buf.pos),
        "buffer_full": bool(buf.full),
        "rng": rng.bit_generator.state,
        "np_global_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python_rng": random.getstate(),
        **state,
    }
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump(meta, f)
    old = path + ".old"
    if os.path.isdir(path):
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def read_checkpoint_meta(path: str) -> dict:
    """The checkpoint's ``meta.json``, its counters checked; :class:`aihf.ConfigError` for one this
    version cannot resume."""
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        for key in ("round", "num_timesteps", "n_updates", "buffer_pos"):
            if isinstance(meta[key], bool) or not isinstance(meta[key], int) or meta[key] < 0:
                raise ValueError(f"'{key}' must be an integer >= 0, got {meta[key]!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a checkpoint this version can resume ({e}); use a new output_dir") from None
    return meta


def restore_checkpoint(path: str, meta: dict, model, reward_net, reward_optimizer, rng: np.random.Generator) -> None:
    """Load what :func:`save_checkpoint` wrote at ``path`` (``meta`` from :func:`read_checkpoint_meta`)
    into ``model``, the reward net, its optimiser, ``rng`` and the global RNGs. Refuses (ConfigError)
    anything that would unpickle."""
    buf = model.replay_buffer
    try:
        state = torch.load(os.path.join(path, "state.pt"), weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}/state.pt: refused to load ({first})") from None
    if _is_sbx(model):
        from .sbx_backend import load_sac_arrays

        source = os.path.join(path, "sac.npz")
        try:
            with np.load(source, allow_pickle=False) as arrays:
                load_sac_arrays(model, arrays, source)
        except ConfigError:
            raise
        except ValueError:  # an object array (it would unpickle)
            raise ConfigError(f"{source}: refused to load (it holds a pickled object array)") from None
        except OSError as e:
            raise ConfigError(f"{source}: refused to load ({e})") from None
    else:
        model.policy.load_state_dict(state["policy"])
        model.actor.optimizer.load_state_dict(state["actor_optimizer"])
        model.critic.optimizer.load_state_dict(state["critic_optimizer"])
    if "log_ent_coef" in state:
        with torch.no_grad():
            model.log_ent_coef.copy_(state["log_ent_coef"])
        model.ent_coef_optimizer.load_state_dict(state["ent_coef_optimizer"])
    reward_net.load_state_dict(state["reward"])
    reward_optimizer.load_state_dict(state["reward_optimizer"])
    torch.set_rng_state(state["torch_rng"])
    try:
        with np.load(os.path.join(path, "buffer.npz"), allow_pickle=False) as arrays:
            for k in BUFFER_ARRAYS:
                getattr(buf, k)[: len(arrays[k])] = arrays[k]
    except ValueError:  # numpy refuses an object array (it would unpickle); its message suggests allowing it
        raise ConfigError(f"{path}/buffer.npz: refused to load (it holds a pickled object array)") from None
    except (OSError, KeyError) as e:
        raise ConfigError(f"{path}/buffer.npz: refused to load ({e})") from None
    buf.pos, buf.full = meta["buffer_pos"], meta["buffer_full"]
    model.num_timesteps, model._n_updates = meta["num_timesteps"], meta["n_updates"]
    rng.bit_generator.state = meta["rng"]
    g = meta["np_global_rng"]
    np.random.set_state((g[0], np.asarray(g[1], dtype=np.uint32), *g[2:]))
    if "python_rng" in meta:
        version, internal, gauss = meta["python_rng"]
        random.setstate((version, tuple(internal), gauss))


def _is_sbx(model) -> bool:
    # sbx's SAC (sac_backend="sbx") keeps its networks as flax TrainStates on the policy.
    return hasattr(model.policy, "actor_state")


def recover_checkpoint(path: str) -> None:
    """A run killed between the two renames of :func:`save_checkpoint` left its last complete
    checkpoint at ``path + ".old"`` (and the next one, perhaps incomplete, at ``path + ".tmp"``,
    which the next save replaces): put the complete one back."""
    if not os.path.isdir(path) and os.path.isdir(path + ".old"):
        os.replace(path + ".old", path)


def refuse_other_settings(config: ControlConfig, path: str, stored: dict) -> None:
    """Raise ``ConfigError`` naming the settings in which ``stored`` (a previous run's, read from
    ``path``) differs from ``config``, resumable ones aside."""
    mine = {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE}
    # A setting added after the file was written had its default then.
    defaults = dataclasses.asdict(ControlConfig())
    theirs = {k: stored.get(k, defaults[k]) for k in mine}
    # A setting the method never reads (train warns "is not used") cannot make the runs differ.
    unused = set(METHOD_IGNORES[config.method]) if theirs["method"] == config.method else set()
    changed = sorted(k for k in mine if mine[k] != theirs[k] and k not in unused)
    if changed:
        raise ConfigError(
            f"{path} was written with different settings ({', '.join(changed)}); use a new output_dir or "
            "--resume false"
        )


def check_previous_run(config: ControlConfig, checkpoint_dir: str) -> None:
    """Before anything is written: refuse an ``output_dir`` that holds another run. A SAC run's
    checkpoint is checked when it is loaded; this covers BC (which has no checkpoint, so it would
    overwrite any run's ``result.json`` and policy) and a finished BC run found by a SAC method."""
    c, ckpt = config, checkpoint_dir
    if c.method != "bc":
        recover_checkpoint(ckpt)
        if os.path.isdir(ckpt):
            return  # its settings are compared when it is loaded
    for path in (
        os.path.join(ckpt, "meta.json"),
        os.path.join(ckpt + ".old", "meta.json"),
        os.path.join(c.output_dir, "result.json"),
    ):
        if not os.path.exists(path):
            continue
        try:
            with open(path) as f:
                stored = json.load(f)["config"]
            if not isinstance(stored, dict):
                raise TypeError("'config' is not a mapping")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}: not a run this version can read ({e}); use a new output_dir") from None
        refuse_other_settings(c, path, stored)
