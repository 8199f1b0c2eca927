"""``sac_backend="sbx"``: the AIHF loop's SAC on sbx (``sbx-rl``, stable-baselines3's algorithms in
JAX), 1.5x SB3's env steps per CPU-second at the ``cpu`` preset's sizes (docs/control.md "Speed").

sbx's SAC is an SB3 ``OffPolicyAlgorithm`` that draws its minibatches from an SB3 replay buffer, so
:class:`~aihf.control.sac.RelabelledReplayBuffer` relabels them with the learned reward as it does
for SB3's SAC; what differs is where the networks live (flax ``TrainState`` trees of JAX arrays, not
torch modules), which this module saves and restores without pickles:

* :func:`checked_sbx_sac` builds SAC whose updates stop at a non-finite loss (as ``CheckedSAC``);
* :func:`sac_arrays` / :func:`load_sac_arrays`: every array of the actor, critics, targets, Adam
  moments, entropy coefficient and PRNG keys, for the checkpoint's ``sac.npz``;
* :func:`actor_arrays` / :func:`sbx_policy`: the actor's weights for ``policy.safetensors``.

sbx is an optional extra (``pip install "aihf[sbx]"``); only :func:`require_sbx` may be called
without it.
"""

from __future__ import annotations

import functools
import math
import os
import sys

import numpy as np

from ..errors import ConfigError

__all__ = [
    "INSTALL",
    "require_sbx",
    "checked_sbx_sac",
    "sac_arrays",
    "load_sac_arrays",
    "parameter_count",
    "actor_arrays",
    "sbx_policy",
]

INSTALL = 'pip install "aihf[sbx]"'
# XLA's CPU backend at one thread, as torch_threads=1 is for torch; read once, when jax is imported.
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def require_sbx(source: str = "the flags", threads: int = 1) -> None:
    """Raise :class:`aihf.ConfigError` (one line, how to install it) when sbx cannot be imported.
    With ``threads == 1`` and no ``XLA_FLAGS`` of the user's, first hold XLA to one thread."""
    if threads == 1 and "XLA_FLAGS" not in os.environ and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = XLA_ONE_THREAD
    try:
        import sbx  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"sac_backend=sbx (from {source}) needs sbx-rl (JAX), which is not installed ({e.name or e}): {INSTALL}"
        ) from None


@functools.cache
def _checked_class():
    from sbx import SAC

    from .sac import SAC_LOSSES, NonFiniteUpdate

    class CheckedSbxSAC(SAC):
        """sbx's SAC whose ``train()`` raises :class:`~aihf.control.sac.NonFiniteUpdate` when a loss
        it logs (:data:`~aihf.control.sac.SAC_LOSSES`) is NaN or infinite."""

        def train(self, gradient_steps: int, batch_size: int) -> None:
            super().train(gradient_steps, batch_size)
            values = self.logger.name_to_value
            for term in SAC_LOSSES:
                if term in values and not math.isfinite(values[term]):
                    raise NonFiniteUpdate(f"SAC's {term[len('train/') :]} is {values[term]}")

    return CheckedSbxSAC


def checked_sbx_sac(*args, **kwargs):
    """sbx's ``SAC(*args, **kwargs)`` (SB3's arguments) whose updates stop at a non-finite loss."""
    return _checked_class()(*args, **kwargs)


def _trees(model) -> dict:
    # Everything an update or an action draws on: a resumed run continues as one never stopped.
    return {
        "actor": model.policy.actor_state,
        "critic": model.policy.qf_state,
        "ent_coef": model.ent_coef_state,
        "key": model.key,
        "policy_key": model.policy.key,
        "policy_noise_key": model.policy.noise_key,
    }


def sac_arrays(model) -> dict[str, np.ndarray]:
    """SAC's whole learning state as ``{"<tree>.<i>": array}`` (leaf ``i`` of each tree in
    :func:`jax.tree_util` order), for ``np.savez``."""
    import jax

    out = {}
    for name, tree in _trees(model).items():
        for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
            out[f"{name}.{i}"] = np.asarray(leaf)
    return out


def load_sac_arrays(model, arrays, source: str) -> None:
    """Put what :func:`sac_arrays` returned (``arrays``, a mapping, read from ``source``) back into
    ``model``, a SAC built with the same settings; :class:`aihf.ConfigError` naming the first
    array that is missing or of another shape or kind of dtype."""
    import jax
    import jax.numpy as jnp

    restored = {}
    for name, tree in _trees(model).items():
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        new = []
        for i, leaf in enumerate(leaves):
            key = f"{name}.{i}"
            if key not in arrays:
                raise ConfigError(f"{source}: no array {key!r}; not an sbx SAC checkpoint of these settings")
            value, mine = np.asarray(arrays[key]), np.asarray(leaf)
            # A fresh TrainState counts steps in a Python int (int64 here), a trained one in int32: kinds must match.
            if value.shape != mine.shape or value.dtype.kind != mine.dtype.kind:
                raise ConfigError(
                    f"{source}: {key} is {value.dtype}{list(value.shape)}, SAC has {mine.dtype}{list(mine.shape)}"
                )
            new.append(jnp.asarray(value))
        restored[name] = jax.tree_util.tree_unflatten(treedef, new)
    model.policy.actor_state, model.policy.qf_state = restored["actor"], restored["critic"]
    model.ent_coef_state = restored["ent_coef"]
    model.key, model.policy.key, model.policy.noise_key = (
        restored["key"],
        restored["policy_key"],
        restored["policy_noise_key"],
    )


def parameter_count(model) -> int:
    """Weights of the actor and critics (targets included), for the disk-space check."""
    import jax

    trees = (model.policy.actor_state.params, model.policy.qf_state.params, model.policy.qf_state.target_params)
    return sum(int(np.size(x)) for t in trees for x in jax.tree_util.tree_leaves(t))


def actor_arrays(model) -> dict[str, np.ndarray]:
    """The actor's weights as ``{"params/Dense_0/kernel": array, ...}`` (flax's names), for
    ``policy.safetensors``."""
    from flax.traverse_util import flatten_dict

    return {"/".join(k): np.asarray(v) for k, v in flatten_dict(model.policy.actor_state.params, sep=None).items()}


def sbx_policy(env, net_arch: list[int], weights: dict[str, np.ndarray], source: str):
    """``act(obs) -> action`` (deterministic) of the actor whose :func:`actor_arrays` are
    ``weights``, on ``env``; :class:`aihf.ConfigError` when they do not fit ``net_arch``."""
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict, unflatten_dict

    # Only the actor is used: a one-transition buffer instead of the run's.
    model = _checked_class()("MlpPolicy", env, buffer_size=1, policy_kwargs={"net_arch": net_arch}, device="cpu")
    mine = {"/".join(k): v for k, v in flatten_dict(model.policy.actor_state.params, sep=None).items()}
    if set(mine) != set(weights) or any(np.shape(mine[k]) != weights[k].shape for k in mine):
        raise ConfigError(f"{source}: not an sbx actor of net_arch {net_arch}")
    params = unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in weights.items()})
    model.policy.actor_state = model.policy.actor_state.replace(params=params)
    return lambda o: model.predict(o, deterministic=True)[0]
