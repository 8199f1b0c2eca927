"""Learning-curve figures of the control benchmark (``aihf control bench`` and ``--report``)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_curves"]


def _setting_title(setting: str) -> str:
    """``expert1_p10`` -> ``1 expert demo, 10 pairs``; ``low4_p0`` -> ``4 low-quality demos, 0 pairs``."""
    demos, pairs = setting.split("_p")
    kind = "low-quality" if demos.startswith("low") else "expert"
    n = int(demos.lstrip("abcdefghijklmnopqrstuvwxyz") or 0)
    return f"{n} {kind} demo{'' if n == 1 else 's'}, {pairs} pairs"


def plot_curves(env_id: str, rows: list[dict], path: str, methods, columns: int = 4) -> None:
    """Learning curves of ``rows`` (the benchmark's per-run rows of one env: ``setting``, ``method``,
    ``seed`` and ``history``, a list of ``(env_steps, normalised return)``) written to the PNG ``path``.

    One panel per setting in a grid of at most ``columns`` columns, with shared axes (env steps,
    normalised return) and one legend (in a spare panel, else under the grid). Each SAC method is its
    mean over seeds with a +/- std band; BC, which takes no env steps, is a dotted level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    settings = sorted({r["setting"] for r in rows if r["method"] != "bc"})
    if not settings:
        return
    ncols = min(columns, len(settings))
    nrows = -(-len(settings) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 2.7 * nrows + 0.6), squeeze=False, sharex=True, sharey=True
    )
    # One color per method in every panel; the null rewards grey and dashed, the floor to beat; the true
    # reward dashed in its own colour, the ceiling at this budget.
    colors = {
        **dict(zip(methods, ("C0", "C1", "C2", "C3", "k"))),
        "null_constant": "0.45",
        "null_untrained": "C5",
        "true_reward": "C6",
    }
    styles = {"null_constant": "--", "null_untrained": "--", "true_reward": "--"}
    handles: dict[str, object] = {}
    for k, setting in enumerate(settings):
        ax = axes[k // ncols][k % ncols]
        for method in methods:
            # ML-IRL and BC ignore preferences: their result at 0 pairs is the reference in every panel; the
            # null rewards and the true reward ignore all data: their one setting's runs are drawn in every panel.
            source = setting.split("_p")[0] + "_p0" if method in ("ml_irl", "bc") else setting
            if method in styles:
                source = min((r["setting"] for r in rows if r["method"] == method), default="")
            curves = [r["history"] for r in rows if r["setting"] == source and r["method"] == method]
            if not curves:
                continue
            if method == "bc":  # no env steps: one evaluation after training, drawn as a level
                level = np.mean([c[-1][1] for c in curves])
                handles.setdefault(method, ax.axhline(level, color=colors[method], ls=":"))
                continue
            n = min(len(c) for c in curves)
            steps = [c[0] for c in curves[0][:n]]
            values = np.array([[c[i][1] for i in range(n)] for c in curves])
            (line,) = ax.plot(steps, values.mean(0), color=colors[method], ls=styles.get(method, "-"))
            handles.setdefault(method, line)
            ax.fill_between(
                steps, values.mean(0) - values.std(0), values.mean(0) + values.std(0), color=colors[method], alpha=0.2
            )
        seeds = len({r["seed"] for r in rows if r["setting"] == setting})
        ax.set_title(f"{_setting_title(setting)} ({seeds} seed{'' if seeds == 1 else 's'})", fontsize=9)
        handles.setdefault("expert", ax.axhline(1.0, color="grey", lw=0.6, ls="--"))
        ax.grid(alpha=0.3)
    for row in range(nrows):
        axes[row][0].set_ylabel("normalised return")
    for col in range(ncols):  # the lowest panel of each column carries the x axis
        last = max(k for k in range(len(settings)) if k % ncols == col)
        ax = axes[last // ncols][col]
        ax.set_xlabel("env steps")
        ax.xaxis.set_tick_params(labelbottom=True)
    # 10k, 20k, ... (sharex: one formatter serves every panel)
    axes[0][0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
    spare = [axes[k // ncols][k % ncols] for k in range(len(settings), nrows * ncols)]
    for ax in spare:
        ax.axis("off")
    labels = {m: m for m in methods}
    labels.update(bc="bc (final level: no env steps)", expert="expert (1.0)")
    order = [m for m in (*methods, "expert") if m in handles]
    legend_args = dict(handles=[handles[m] for m in order], labels=[labels[m] for m in order], fontsize=8)
    if spare:
        spare[0].legend(loc="center", frameon=False, **legend_args)
    else:
        fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(order), 4), frameon=False, **legend_args)
    fig.suptitle(f"{env_id}: normalised return (R - R_random) / (R_expert - R_random), mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # "tight" takes in a legend placed under the grid
    plt.close(fig)
