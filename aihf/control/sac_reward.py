"""What SAC is trained on, in words: the survival bonus (``survival_bonus``) and the null rewards.

SAC never sees the learned reward ``r`` (in ``(-bound, bound)``) itself but
``sac_reward_scale * (r + shift) / divisor``. With the survival bonus the shift makes that
non-negative (``shift = bound``, or ``-min`` of the sampled rewards under ``buffer``
normalisation), so every step alive earns reward. On an env that ends episodes early when the
agent fails (Hopper falling, InvertedDoublePendulum tipping over) that alone rewards staying
alive, whatever ``r`` says: an untrained or constant reward then scores well too (an AIHF run
whose reward never trained scored 0.85 normalised on InvertedDoublePendulum-v5, above AIHF's 0.74).
The null-reward methods measure that part; :func:`survival_bonus_line` says it at the start of
``aihf control train``, and :func:`survival_bonus_record` is what ``result.json`` keeps.
``true_reward`` is the other end: SAC on the env's own reward, no learned reward and no shift.
"""

from __future__ import annotations

from .config import NULL_METHODS, TRUE_REWARD, ControlConfig

__all__ = ["survival_bonus_line", "survival_bonus_record", "terminations", "learns_reward"]


def survival_bonus_line(config: ControlConfig) -> str | None:
    """One line for stderr at the start of a SAC run (None for ``bc``, which trains no SAC)."""
    if config.method == "bc":
        return None
    c = config
    if c.method == TRUE_REWARD:
        return (
            "aihf control train: true_reward: SAC is trained on the env's own reward as Gymnasium returns it (no "
            "learned reward, no survival-bonus shift, no normalisation): what a perfect learned reward could reach at "
            "this budget, a reference, not a method from the data"
        )
    if c.survival_bonus:
        what = {"null_constant": "the constant 0", "null_untrained": "the untrained reward r"}.get(
            c.method, "the learned reward r"
        )
        compare = "" if c.method in NULL_METHODS else "compare with --method null_constant / null_untrained; "
        return (
            f"aihf control train: survival bonus on: SAC is trained on {what} shifted by {_shift(c)} (>= 0), so every "
            "step alive earns reward; on envs that end episodes early (Hopper, InvertedDoublePendulum) that alone "
            f"rewards not falling, whatever the reward learned: {compare}--survival_bonus false trains on r itself"
        )
    return (
        "aihf control train: survival bonus off: SAC is trained on r itself, negative where the reward says so; on "
        "envs that end episodes early, ending one can then be a way to escape negative reward "
        "(--survival_bonus true shifts r to >= 0)"
    )


def survival_bonus_record(config: ControlConfig, terminated_episodes: int | None) -> dict:
    """``result.json``'s ``survival_bonus``: on or off, the shift SAC's reward got, and how many of
    SAC's training episodes ended early (terminated, not truncated): where that is 0 the bonus
    changed no optimum; None for ``bc``."""
    c = config
    if c.method == "bc":
        return {"on": False, "shift": None, "terminated_episodes": None}
    if c.method == TRUE_REWARD:  # the env's reward, unshifted, whatever survival_bonus says
        return {"on": False, "shift": "none", "terminated_episodes": terminated_episodes}
    return {"on": c.survival_bonus, "shift": _shift(c), "terminated_episodes": terminated_episodes}


def _shift(c: ControlConfig) -> str:
    if not c.survival_bonus:
        return "none"
    if c.sac_reward_normalization == "buffer" and c.method != "null_constant":  # a constant has no spread
        return "-min(r) over the replay buffer (then divided by the std)"
    return f"+{c.reward_bound:g}"


def terminations(replay_buffer) -> int:
    """Transitions in SB3's replay buffer that ended an episode early: ``done`` and not a time-out."""
    size = replay_buffer.buffer_size if replay_buffer.full else replay_buffer.pos
    done, timeout = replay_buffer.dones[:size], replay_buffer.timeouts[:size]
    return int((done * (1 - timeout)).sum())


def learns_reward(config: ControlConfig) -> bool:
    """Whether the run takes reward steps (not bc, not a null reward, not the env's reward)."""
    return config.method not in ("bc", TRUE_REWARD) and config.method not in NULL_METHODS
