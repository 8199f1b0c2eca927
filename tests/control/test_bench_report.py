"""aihf.control.bench_report: the pairings of the control table (issue 23's targets are read from them)."""

import pytest

from aihf.control.bench_report import paired_differences

ENV = "Hopper-v5"


def _row(setting, method, seed, final, late=None):
    return {"env_id": ENV, "setting": setting, "method": method, "seed": seed, "final": final,
            "late": final if late is None else late}  # fmt: skip


def test_more_pairs_are_paired_with_the_next_smaller_pair_count_by_seed():
    """Target: AIHF with more pairs is not worse than with fewer. 100 pairs against 10 (not 0, which is
    ML-IRL and has its own row), seed by seed, on the same demonstrations only."""
    rows = [
        _row("expert1_p0", "ml_irl", 0, 0.1), _row("expert1_p0", "ml_irl", 1, 0.2),
        _row("expert1_p10", "aihf", 0, 0.5), _row("expert1_p10", "aihf", 1, 0.4),
        _row("expert1_p100", "aihf", 0, 0.7, late=0.6), _row("expert1_p100", "aihf", 1, 0.3, late=0.2),
        _row("low1_p100", "aihf", 0, 0.9), _row("low1_p100", "aihf", 1, 0.9),
    ]  # fmt: skip
    got = {(r["setting"], r["baseline"]): r for r in paired_differences(rows)}
    more = got[("expert1_p100", "aihf (10 pairs)")]
    assert more["seeds"] == [0, 1]
    assert more["final"]["per_seed"] == pytest.approx([0.2, -0.1]) and more["final"]["wins"] == 1
    assert more["late"]["per_seed"] == pytest.approx([0.1, -0.2])
    assert ("expert1_p10", "ml_irl") in got and not any(b.startswith("aihf (") for s, b in got if s == "expert1_p10")
    # low1 has no smaller pair count of its own: never paired with expert1's runs.
    assert not any(b.startswith("aihf (") for s, b in got if s == "low1_p100")
