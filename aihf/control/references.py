"""Is a collected demonstrator good enough to normalise scores by? (``aihf control collect``)

Normalised returns ``(R - R_random) / (R_expert - R_random)`` take the demonstrator's return as
1. A demonstrator that has not converged (Pendulum-v1 after 10k SAC steps: -1018 against the
random policy's -1297, where a swing-up controller scores -120 to -150) makes that unit small, so
methods score above 1 (behaviour cloning 1.29) and every score says little. :func:`check_demonstrator`
compares the demonstrator with the random policy (is the gap more than noise?) and, for the envs in
:data:`REFERENCE_RETURNS`, with a published or physical expert-level return (what fraction of the gap
from random to that reference does it close?).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["REFERENCE_RETURNS", "WARN_FRACTION", "NOISE_STANDARD_ERRORS", "reference_return", "check_demonstrator"]

# Expert-level episode returns, by env name without its version (the v5 MuJoCo tasks keep v2's rewards).
REFERENCE_RETURNS = {
    # D4RL's expert references (Fu et al. 2020, d4rl/infos.py REF_MAX_SCORE): SAC trained to convergence.
    "HalfCheetah": 12135.0,
    "Hopper": 3234.3,
    "Walker2d": 4592.3,
    "Ant": 3879.7,
    # The physical ceiling: +1 per step alive for 1000 steps.
    "InvertedPendulum": 1000.0,
    # Balancing all 1000 steps: an alive bonus of 10 per step less the distance penalty (~9.35 per step).
    "InvertedDoublePendulum": 9350.0,
    # A swing-up-and-hold controller from random starts (tests/control/helpers.py's scores -120 to -140).
    "Pendulum": -150.0,
}
WARN_FRACTION = 0.5  # below this fraction of the reference gap collect warns; below min_expert_fraction it refuses
NOISE_STANDARD_ERRORS = 2.0  # a gap of at most this many standard errors is "within noise of random"


def reference_return(env_id: str) -> float | None:
    """The :data:`REFERENCE_RETURNS` entry of ``env_id`` (``Hopper-v5`` -> ``Hopper``), else None."""
    return REFERENCE_RETURNS.get(env_id.rsplit("-v", 1)[0].split(":")[-1])


def check_demonstrator(env_id: str, random_returns, expert_returns, min_fraction: float) -> dict:
    """Judge a demonstrator by its episode returns against the random policy's (arrays of shape
    ``(episodes,)``). Returns a dict for ``meta.json``: ``verdict`` (``ok``, ``weak``: warn, or
    ``refused``), the means, ``gap_standard_errors`` (the gap over the standard error of the
    difference of means; ``inf`` when both spreads are 0), ``reference_return`` and
    ``fraction_of_reference_gap`` (None for an env without a reference) and ``message`` (one line,
    empty when ``ok``).

    Refused: the gap is within :data:`NOISE_STANDARD_ERRORS` standard errors (or negative), or, with a
    reference, the demonstrator closes less than ``min_fraction`` of the gap from random to it.
    Weak: with a reference, less than :data:`WARN_FRACTION` of that gap.
    """
    random_returns, expert_returns = np.asarray(random_returns, float), np.asarray(expert_returns, float)
    r_mean, e_mean = float(random_returns.mean()), float(expert_returns.mean())
    error = math.sqrt(_squared_error(random_returns) + _squared_error(expert_returns))
    gap = e_mean - r_mean
    z = gap / error if error > 0 else (math.inf if gap > 0 else -math.inf if gap < 0 else 0.0)
    reference = reference_return(env_id)
    fraction = gap / (reference - r_mean) if reference is not None and reference > r_mean else None
    head = f"the demonstrator's return {e_mean:.1f} (random policy: {r_mean:.1f})"
    verdict, message = "ok", ""
    if z <= NOISE_STANDARD_ERRORS:
        verdict = "refused"
        message = (
            f"{head} is not above random by more than noise ({z:.1f} standard errors, {len(expert_returns)} and "
            f"{len(random_returns)} episodes)"
        )
    elif fraction is not None and fraction < WARN_FRACTION:
        verdict = "refused" if fraction < min_fraction else "weak"
        limit = f"min_expert_fraction {min_fraction:g}" if verdict == "refused" else f"warned below {WARN_FRACTION:g}"
        message = (
            f"{head} closes only {fraction:.0%} of the gap from random to {env_id}'s reference return "
            f"{reference:g} ({limit}); normalised scores are fractions of this demonstrator and can exceed 1"
        )
    return {
        "verdict": verdict,
        "expert_return": e_mean,
        "random_return": r_mean,
        "gap_standard_errors": z if math.isfinite(z) else None,  # JSON has no infinity
        "reference_return": reference,
        "fraction_of_reference_gap": fraction,
        "min_expert_fraction": min_fraction,
        "message": message,
    }


def _squared_error(returns: np.ndarray) -> float:
    """Squared standard error of the mean of ``returns`` (0 for a single episode: nothing to estimate)."""
    return float(returns.var(ddof=1) / len(returns)) if len(returns) > 1 else 0.0
