"""Figures for backtests (matplotlib, imported lazily: it is the ``plot`` extra)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .evaluation import BacktestResult


def plot_backtest(
    result: BacktestResult, path: str | Path, n_origins: int = 4, context: int | None = None
) -> None:
    """Three panels: forecasts and recall moments, one recall explained, MAE by step ahead.

    1. The end of the evaluated range, with every model's forecasts at ``n_origins``
       origins (ek with its interval), and ticks under the series wherever memory
       was recalled.
    2. For the last shown origin where memory was recalled: the present window and
       ek's forecast, over the recalled episode's own window and what followed it
       (z-scored to the present window, as the analog expert aligns it), with the
       episode's time marked.
    3. MAE per step ahead for every model.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    horizon = result.horizon
    context = context or max(6 * horizon, 200)
    origins = result.origins
    values = result.values
    last = int(origins[-1]) + horizon
    first = max(int(origins[0]), last - context)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {name: palette[i % len(palette)] for i, name in enumerate(result.runs)}
    fig, (top, middle, bottom) = plt.subplots(
        3,
        1,
        figsize=(11, 10),
        gridspec_kw={"height_ratios": [2.2, 1.4, 1]},
        constrained_layout=True,
    )

    t = np.arange(first, last + 1)
    top.plot(t, values[first : last + 1], color="0.2", lw=1.0, label="series")
    shown = [i for i, o in enumerate(origins) if o >= first]
    picks = [
        shown[p] for p in np.unique(np.linspace(0, len(shown) - 1, n_origins).round().astype(int))
    ]
    for k, i in enumerate(picks):
        o = int(origins[i])
        steps = np.arange(o + 1, o + 1 + horizon)
        for name, run in result.runs.items():
            emphasis = name == "ek"
            top.plot(
                steps,
                run.forecasts[i],
                color=color[name],
                lw=1.8 if emphasis else 0.9,
                alpha=1.0 if emphasis else 0.7,
                label=name if k == 0 else None,
            )
            if emphasis and run.lower is not None and run.upper is not None:
                top.fill_between(steps, run.lower[i], run.upper[i], color=color[name], alpha=0.15)
    ek = result.runs.get("ek")
    recalls = [r for r in (ek.recalls if ek is not None else []) if r["origin"] >= first]
    if recalls:
        low, span = values[first : last + 1].min(), np.ptp(values[first : last + 1]) or 1.0
        top.scatter(
            [r["origin"] for r in recalls],
            np.full(len(recalls), low - 0.06 * span),
            marker="|",
            s=25,
            color=color.get("ek"),
            label="memory recalled",
        )
    top.set_title(f"{result.name}: forecasts at {len(picks)} origins, h={horizon}")
    top.legend(fontsize=8, ncol=5, loc="upper left")

    _explain_recall(middle, result, picks, horizon, color.get("ek", palette[0]))

    for name, row in result.scores().items():
        bottom.plot(
            np.arange(1, horizon + 1),
            row["mae_by_h"],
            marker="o",
            ms=3,
            color=color[name],
            label=f"{name} ({row['mae']:.3g})",
        )
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_xlabel("steps ahead")
    bottom.set_ylabel("MAE")
    bottom.legend(fontsize=8, ncol=4)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _explain_recall(ax, result: BacktestResult, picks: list[int], horizon: int, ek_color) -> None:
    ek = result.runs.get("ek")
    by_origin = {r["origin"]: r for r in ek.recalls} if ek is not None else {}
    candidates = [i for i in picks if int(result.origins[i]) in by_origin]
    if ek is None or not candidates:
        ax.text(0.5, 0.5, "no recall at the shown origins", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    i = candidates[-1]
    o = int(result.origins[i])
    match = by_origin[o]
    m = int(match["matched_origin"])
    values = result.values
    span = min(max(2 * horizon, 24), o + 1, m + 1)
    rel_past = np.arange(-span + 1, 1)
    rel_future = np.arange(1, horizon + 1)
    now = values[o - span + 1 : o + 1]
    then = values[m - span + 1 : m + 1]
    then_next = values[m + 1 : m + 1 + horizon]
    # z-score the episode onto the present window, as the analog expert aligns it.
    scale = now.std() / then.std() if then.std() > 0 else 1.0
    mapped = lambda x: (x - then.mean()) * scale + now.mean()  # noqa: E731
    ax.plot(rel_past, now, color="0.2", lw=1.2, label=f"present window (origin t={o})")
    ax.plot(
        rel_future,
        values[o + 1 : o + 1 + horizon],
        color="0.2",
        lw=1.2,
        ls=":",
        label="what happened",
    )
    ax.plot(rel_future, ek.forecasts[i], color=ek_color, lw=1.8, label="ek forecast")
    ax.plot(
        rel_past,
        mapped(then),
        color="tab:red",
        lw=1.0,
        alpha=0.8,
        label=f"recalled episode t={m} (weight {match['weight']:.2f})",
    )
    ax.plot(
        rel_future[: then_next.size],
        mapped(then_next),
        color="tab:red",
        lw=1.0,
        ls="--",
        alpha=0.8,
        label="what followed the episode",
    )
    ax.axvline(0.5, color="0.6", lw=0.8)
    ax.set_xlabel("steps relative to the origin (episode aligned onto the present)")
    ax.set_title("why the forecast looks the way it does: the strongest recalled episode")
    ax.legend(fontsize=8, ncol=2, loc="best")
